-- Invitations to an organization (SQLite). Same columns and meaning as
-- migrations/postgres/0007_invitations.sql.
--
-- An organization's admin invites an email with a role; the person holding
-- the one-time token (which the API returns once and the operator delivers)
-- accepts it with the account's password, or sets one for a new account.
-- Only the token's sha256 is stored.
CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('org_admin', 'agent_manager', 'task_executor', 'viewer')),
    token_hash   TEXT NOT NULL UNIQUE,
    invited_by   TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    accepted_at  INTEGER,
    accepted_by  TEXT REFERENCES users(id) ON DELETE SET NULL
);
CREATE INDEX invitations_org_idx ON invitations (org_id, created_at);
