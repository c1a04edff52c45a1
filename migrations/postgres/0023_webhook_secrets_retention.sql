-- Webhook secret rotation and delivery-log retention (PostgreSQL). Twin:
-- migrations/sqlite/0020_webhook_secrets_retention.sql.
-- A rotated webhook keeps its previous secret (sealed with the master key,
-- bound to `webhook:<id>` as the current one) until the overlap ends:
-- deliveries meanwhile carry a signature under each.
ALTER TABLE webhooks ADD COLUMN previous_secret_ciphertext TEXT;
ALTER TABLE webhooks ADD COLUMN previous_secret_fingerprint TEXT;
ALTER TABLE webhooks ADD COLUMN previous_secret_expires_at BIGINT;   -- unix ms
-- Ended deliveries older than VEL_WEBHOOK_DELIVERY_RETENTION_DAYS are
-- deleted in batches (their attempts cascade), one instance at a time, by
-- the time they ended, oldest first.
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (finished_at)
    WHERE finished_at IS NOT NULL;
INSERT INTO jobs (name) VALUES ('webhook_delivery_retention');
