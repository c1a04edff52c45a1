-- Cross-tenant work runs as its own role (PostgreSQL only: SQLite serves one
-- instance and has no roles; every store function also filters by
-- organization, so it is as strict).
--
-- Two NOLOGIN roles carry every privilege the server uses:
--   vel_app       serves one organization: the policies show it the rows of
--                 the organization named by `app.org_id` for the transaction,
--                 and nothing of the tables that belong to no tenant.
--   vel_platform  crosses organizations: authentication before the tenant
--                 is known, platform-admin endpoints, the queue's claims.
-- The server switches each pooled connection to one of them (`SET ROLE` in
-- after_connect). A connection serving a tenant cannot switch itself to
-- vel_platform when it logs in as a user that is a member of vel_app only
-- (`VEL_TENANT_DATABASE_URL`, see docs/security.md); no setting a session
-- may change turns the policies off.

DO $$
BEGIN
    CREATE ROLE vel_platform NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT vel_platform TO %I', current_user);
EXCEPTION
    WHEN duplicate_object OR unique_violation OR invalid_grant_operation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO vel_platform;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO vel_platform;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO vel_platform;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO vel_platform;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO vel_platform;

-- The migrations' own bookkeeping is the owner's alone.
REVOKE ALL ON _sqlx_migrations FROM vel_app, vel_platform;

-- Tenant tables: vel_app sees its organization's rows; `app.rls_bypass` is
-- no longer honoured; vel_platform sees every row.

DROP POLICY tenant_isolation ON organizations;
CREATE POLICY tenant_isolation ON organizations TO vel_app
    USING (id = current_setting('app.org_id', true))
    WITH CHECK (id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON organizations TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON memberships;
CREATE POLICY tenant_isolation ON memberships TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON memberships TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON agents;
CREATE POLICY tenant_isolation ON agents TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON agents TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON agent_config_history;
CREATE POLICY tenant_isolation ON agent_config_history TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON agent_config_history TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON integrations;
CREATE POLICY tenant_isolation ON integrations TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON integrations TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON audit_logs;
CREATE POLICY tenant_isolation ON audit_logs TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON audit_logs TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON api_keys;
CREATE POLICY tenant_isolation ON api_keys TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON api_keys TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON tasks;
CREATE POLICY tenant_isolation ON tasks TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON tasks TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON task_attempts;
CREATE POLICY tenant_isolation ON task_attempts TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON task_attempts TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON task_events;
CREATE POLICY tenant_isolation ON task_events TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON task_events TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON response_cache;
CREATE POLICY tenant_isolation ON response_cache TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON response_cache TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON invitations;
CREATE POLICY tenant_isolation ON invitations TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON invitations TO vel_platform USING (true) WITH CHECK (true);

-- Plugins: an organization also reads the platform's (org_id IS NULL) and
-- writes only its own.

DROP POLICY tenant_isolation ON plugins;
CREATE POLICY tenant_isolation ON plugins TO vel_app
    USING (org_id IS NULL OR org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON plugins TO vel_platform USING (true) WITH CHECK (true);

DROP POLICY tenant_isolation ON plugin_versions;
CREATE POLICY tenant_isolation ON plugin_versions TO vel_app
    USING (org_id IS NULL OR org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY platform_access ON plugin_versions TO vel_platform USING (true) WITH CHECK (true);

-- Tables that belong to no tenant ---------------------------------------

-- Accounts: an organization reads its members' rows (memberships, filtered
-- by its own policy, decides who they are) and writes none.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY members_read ON users FOR SELECT TO vel_app
    USING (EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = users.id));
CREATE POLICY platform_access ON users TO vel_platform USING (true) WITH CHECK (true);

-- Component bytes, stored once per digest: an organization adds bytes (an
-- upload, which must see which digests exist to store the same bytes once)
-- and never reads them (loading a plugin is platform work); removing bytes
-- another version may share is platform work too.
ALTER TABLE plugin_blobs ENABLE ROW LEVEL SECURITY;
REVOKE SELECT, UPDATE, DELETE ON plugin_blobs FROM vel_app;
GRANT SELECT (sha256, size_bytes, created_at) ON plugin_blobs TO vel_app;
CREATE POLICY digests ON plugin_blobs FOR SELECT TO vel_app USING (true);
CREATE POLICY upload ON plugin_blobs FOR INSERT TO vel_app WITH CHECK (true);
CREATE POLICY platform_access ON plugin_blobs TO vel_platform USING (true) WITH CHECK (true);

-- Logged-out tokens and login counters: platform only.
ALTER TABLE revoked_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_access ON revoked_tokens TO vel_platform USING (true) WITH CHECK (true);
ALTER TABLE rate_limit_hits ENABLE ROW LEVEL SECURITY;
CREATE POLICY platform_access ON rate_limit_hits TO vel_platform USING (true) WITH CHECK (true);
