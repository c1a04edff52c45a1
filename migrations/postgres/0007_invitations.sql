-- Invitations to an organization (PostgreSQL). Same columns and meaning as
-- migrations/sqlite/0005_invitations.sql.
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
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    accepted_at  BIGINT,
    accepted_by  TEXT REFERENCES users(id) ON DELETE SET NULL
);
CREATE INDEX invitations_org_idx ON invitations (org_id, created_at);

ALTER TABLE invitations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invitations
    USING (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on')
    WITH CHECK (org_id = current_setting('app.org_id', true) OR current_setting('app.rls_bypass', true) = 'on');
