//! The `vel` binary: the server and its command-line tools.

use clap::Parser;

/// mimalloc for Rust and, through its `override` feature, for the C code
/// linked in (SQLite) too: under load glibc gave each busy thread its own
/// arena and kept what they had freed (an Argon2 hash alone is 19 MiB), so
/// the server's resident memory grew to three times what it uses. Figures
/// in docs/benchmarks.md ("Gateway overhead"). Wrapped in
/// `vel_runtime::Accounted`, which charges what a plugin call makes the
/// host allocate to that call's memory limit.
#[global_allocator]
static ALLOCATOR: vel_runtime::Accounted<mimalloc::MiMalloc> =
    vel_runtime::Accounted(mimalloc::MiMalloc);

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in
/// mimalloc.h's `mi_option_e` (the crate names only the stable options).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Give freed memory back to the system at once, and commit arena memory
/// only when used: a server that is idle between bursts should not keep
/// the burst's peak resident. An operator's `MIMALLOC_PURGE_DELAY` or
/// `MIMALLOC_ARENA_EAGER_COMMIT` wins over these defaults, as the other
/// `MIMALLOC_*` variables do for what this does not set.
fn tune_allocator() {
    for (option, variable, value) in [
        (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
        (
            MI_OPTION_ARENA_EAGER_COMMIT,
            "MIMALLOC_ARENA_EAGER_COMMIT",
            0,
        ),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: a plain setter of mimalloc's option table; any value
            // is valid.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = vel::cli::Cli::parse();
    vel::cli::run(cli)
}
