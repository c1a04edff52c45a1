-- Webhooks (SQLite). Twin: migrations/postgres/0018_webhooks.sql.
-- An organization's HTTPS endpoints that are told of its events
-- (`crate::webhooks`). Each event a webhook subscribes to becomes a row of
-- the durable outbox `webhook_deliveries`, written in the transaction of
-- the change it reports, so an event committed is delivered at least once
-- across crashes and restarts. Delivery workers claim due rows under a
-- lease, as the task queue does; every attempt is logged in
-- `webhook_attempts`.
CREATE TABLE webhooks (
    id                    TEXT PRIMARY KEY,
    org_id                TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    url                   TEXT NOT NULL,
    events                TEXT NOT NULL,             -- ' a.b c.d ': names between spaces
    description           TEXT,
    secret_ciphertext     TEXT NOT NULL,             -- sealed with the master key
    secret_fingerprint    TEXT NOT NULL,
    enabled               INTEGER NOT NULL DEFAULT 1,
    disabled_reason       TEXT,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0, -- failed deliveries in a row
    created_by            TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX webhooks_org_idx ON webhooks (org_id);

CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL,
    webhook_id        TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id          TEXT NOT NULL,                 -- the same for every webhook told of it
    event_type        TEXT NOT NULL,
    body              TEXT NOT NULL,                 -- the JSON sent, fixed at the event
    status            TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER,                        -- unix ms, while pending
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    claims            INTEGER NOT NULL DEFAULT 0,     -- claims since the last recorded attempt
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at);

CREATE TABLE webhook_attempts (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    delivery_id     TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,                 -- 1 for the first
    status          TEXT NOT NULL,                   -- delivered, http_error, timeout, connect_error, refused
    response_code   INTEGER,
    response_body   TEXT,                            -- at most 1 KiB
    error           TEXT,
    latency_ms      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, attempt);
