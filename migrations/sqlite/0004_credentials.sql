-- Credentials follow their holder (SQLite). Same columns and meaning as
-- migrations/postgres/0006_credentials.sql.

-- Bumped when every session of the user must end (a password change);
-- an access token carries the epoch it was issued under.
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;

-- An API key may expire; a revoked key says why (`revoked`, `creator_removed`).
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN revoked_reason TEXT;
