-- Pending changes of an account's email (PostgreSQL). Same columns and
-- meaning as migrations/sqlite/0008_email_changes.sql.
--
-- A change of email takes effect only when confirmed with the one-time
-- token sent to the new address (through the operator's VEL_NOTIFY_URL).
-- Only the token's sha256 is stored; a confirmed token's row is deleted,
-- and a new request replaces the user's earlier ones.
CREATE TABLE email_changes (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    new_email   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX email_changes_user_idx ON email_changes (user_id);

-- Accounts belong to no tenant: platform only, as revoked_tokens
-- (migrations/postgres/0009_platform_role.sql). vel_app has no policy here,
-- so it sees and writes no row.
ALTER TABLE email_changes ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_access ON email_changes TO vel_platform USING (true) WITH CHECK (true);
