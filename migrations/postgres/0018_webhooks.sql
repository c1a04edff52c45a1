-- Webhooks (PostgreSQL). Twin: migrations/sqlite/0015_webhooks.sql.
-- An organization's HTTPS endpoints that are told of its events
-- (`crate::webhooks`). Each event a webhook subscribes to becomes a row of
-- the durable outbox `webhook_deliveries`, written in the transaction of
-- the change it reports, so an event committed is delivered at least once
-- across crashes and restarts. Delivery workers claim due rows under a
-- lease (`FOR UPDATE SKIP LOCKED`), as the task queue does; every attempt
-- is logged in `webhook_attempts`.
CREATE TABLE webhooks (
    id                    TEXT PRIMARY KEY,
    org_id                TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    url                   TEXT NOT NULL,
    events                TEXT NOT NULL,             -- ' a.b c.d ': names between spaces
    description           TEXT,
    secret_ciphertext     TEXT NOT NULL,             -- sealed with the master key
    secret_fingerprint    TEXT NOT NULL,
    enabled               BIGINT NOT NULL DEFAULT 1,
    disabled_reason       TEXT,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0, -- failed deliveries in a row
    created_by            TEXT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
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
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT,                        -- unix ms, while pending
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    claims            BIGINT NOT NULL DEFAULT 0,     -- claims since the last recorded attempt
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    finished_at       BIGINT,
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
    attempt         BIGINT NOT NULL,                 -- 1 for the first
    status          TEXT NOT NULL,                   -- delivered, http_error, timeout, connect_error, refused
    response_code   BIGINT,
    response_body   TEXT,                            -- at most 1 KiB
    error           TEXT,
    latency_ms      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, attempt);

-- A delivery queued wakes the delivery workers of every instance, this
-- one included (no origin: the echo is wanted, the writer may not know it
-- queued anything).
CREATE FUNCTION vel_notify_webhook_due() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vel_webhook_queue', ' ');
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_deliveries_notify_due
    AFTER INSERT ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION vel_notify_webhook_due();

ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhooks TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON webhooks TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON webhook_deliveries TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_attempts TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON webhook_attempts TO vel_platform USING (true) WITH CHECK (true);
