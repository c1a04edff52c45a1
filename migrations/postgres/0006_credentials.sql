-- Credentials follow their holder (PostgreSQL). Same columns and meaning as
-- migrations/sqlite/0004_credentials.sql.

-- Bumped when every session of the user must end (a password change);
-- an access token carries the epoch it was issued under.
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;

-- An API key may expire; a revoked key says why (`revoked`, `creator_removed`).
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN revoked_reason TEXT;
