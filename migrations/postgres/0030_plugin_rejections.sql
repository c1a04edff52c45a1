-- A platform admin may reject a tenant provider version awaiting approval
-- of its outbound hosts: who, when and why are kept on the version, which
-- then leaves the approval queue and can never be approved or activated.
ALTER TABLE plugin_versions ADD COLUMN rejected_by TEXT;
ALTER TABLE plugin_versions ADD COLUMN rejected_at BIGINT;
ALTER TABLE plugin_versions ADD COLUMN rejection_reason TEXT;
