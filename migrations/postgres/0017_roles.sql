-- Custom roles: an organization's own named sets of permissions
-- (`auth/permissions.rs` names them), which memberships, invitations and
-- API keys may carry besides the four built-in roles. The role columns
-- lose their fixed lists; the application checks a name against the
-- built-in roles and the organization's `org_roles` before storing it.
CREATE TABLE org_roles (
    org_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    permissions  TEXT NOT NULL,               -- JSON array of permission names
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);

ALTER TABLE memberships DROP CONSTRAINT memberships_role_check;
ALTER TABLE memberships ADD CONSTRAINT memberships_role_check CHECK (role <> '' AND role <> 'admin');
ALTER TABLE invitations DROP CONSTRAINT invitations_role_check;
ALTER TABLE invitations ADD CONSTRAINT invitations_role_check CHECK (role <> '' AND role <> 'admin');
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check CHECK (role <> '');

ALTER TABLE org_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON org_roles TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON org_roles TO vel_platform USING (true) WITH CHECK (true);
