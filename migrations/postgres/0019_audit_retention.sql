-- Audit retention (PostgreSQL). Twin: migrations/sqlite/0016_audit_retention.sql.
-- Entries older than VEL_AUDIT_RETENTION_DAYS are deleted in batches, by one
-- instance at a time (the job's watermark is when its last batch ran), oldest
-- first: the index on the time alone serves that order.
CREATE INDEX audit_logs_time_idx ON audit_logs (created_at);
INSERT INTO jobs (name) VALUES ('audit_retention');
