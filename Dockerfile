# Builds the same `vel` binary as `cargo build --release -p vel` and runs it.
# The plugin components are compiled during the build (plugins/artifacts/build.rs
# targets wasm32-wasip2), so the build stage needs that target installed;
# rust-toolchain.toml pins the toolchain and lists the target.

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
RUN cargo build --release --locked -p vel \
    && cp target/release/vel /usr/local/bin/vel

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /data --create-home vel
COPY --from=build /usr/local/bin/vel /usr/local/bin/vel
USER vel
WORKDIR /data
# PostgreSQL comes from DATABASE_URL; set VEL_SECRET_KEY and VEL_ADMIN_PASSWORD as secrets.
ENV VEL_LISTEN=0.0.0.0:8080 \
    VEL_DATA_DIR=/data \
    VEL_TRUST_PROXY_HEADERS=true
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vel"]
CMD ["serve"]
