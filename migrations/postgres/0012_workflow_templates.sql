-- Workflow templates (PostgreSQL). Same tables, columns and meaning as
-- migrations/sqlite/0009_workflow_templates.sql.
--
-- A template is a named, versioned workflow definition with typed
-- variables (`{{vars.name}}` in its strings, substituted when a workflow is
-- started from it). Its versions are immutable: posting a template under a
-- name the organization already uses adds version N+1. Built-in templates
-- ship with the server and belong to the platform (org_id NULL).
CREATE TABLE workflow_templates (
    id              TEXT PRIMARY KEY,
    org_id          TEXT REFERENCES organizations(id) ON DELETE CASCADE, -- NULL: the platform's
    scope           TEXT NOT NULL,              -- 'platform' or the organization id: unique with name
    name            TEXT NOT NULL,
    visibility      TEXT NOT NULL CHECK (visibility IN ('private', 'organization', 'public')),
    owner_id        TEXT REFERENCES users(id) ON DELETE SET NULL, -- who created it (private: who sees it)
    latest_version  BIGINT NOT NULL,
    builtin         BIGINT NOT NULL DEFAULT 0, -- 1: ships with the server
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX workflow_templates_scope_name_idx ON workflow_templates (scope, name);
CREATE INDEX workflow_templates_public_idx ON workflow_templates (name) WHERE visibility = 'public';

-- Every version of a template, never changed once written.
CREATE TABLE workflow_template_versions (
    template_id  TEXT NOT NULL REFERENCES workflow_templates(id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    org_id       TEXT REFERENCES organizations(id) ON DELETE CASCADE,
    description  TEXT NOT NULL,
    definition   TEXT NOT NULL,                 -- JSON, with {{vars.…}} placeholders
    variables    TEXT NOT NULL,                 -- JSON: name -> {type, default?, description?}
    visibility   TEXT NOT NULL,                 -- the visibility this version set
    source       TEXT,                          -- JSON: the workflow or template it was made from
    created_by   TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (template_id, version)
);

-- The template version a workflow was started from (a public template may
-- belong to another organization, so no foreign key).
ALTER TABLE workflows ADD COLUMN template_id TEXT;
ALTER TABLE workflows ADD COLUMN template_version BIGINT;
CREATE INDEX workflows_template_idx ON workflows (org_id, template_id) WHERE template_id IS NOT NULL;

-- An organization writes its own templates and reads them; every
-- organization also reads public templates (its own, other organizations'
-- and the platform's built-ins) and their versions, never writing them.
-- Private templates are filtered to their creator by the server.
ALTER TABLE workflow_templates ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_templates TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY public_read ON workflow_templates FOR SELECT TO vel_app
    USING (visibility = 'public');
CREATE POLICY platform_access ON workflow_templates TO vel_platform USING (true) WITH CHECK (true);

ALTER TABLE workflow_template_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_template_versions TO vel_app
    USING (org_id = current_setting('app.org_id', true))
    WITH CHECK (org_id = current_setting('app.org_id', true));
CREATE POLICY public_read ON workflow_template_versions FOR SELECT TO vel_app
    USING (EXISTS (SELECT 1 FROM workflow_templates t
                   WHERE t.id = workflow_template_versions.template_id AND t.visibility = 'public'));
CREATE POLICY platform_access ON workflow_template_versions TO vel_platform USING (true) WITH CHECK (true);
