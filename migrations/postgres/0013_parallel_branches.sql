-- Parallel steps (PostgreSQL). Same columns and meaning as
-- migrations/sqlite/0010_parallel_branches.sql.
--
-- A parallel step has one run of its own (kind `parallel`, the workflow's
-- current run while the group lasts); each step run inside one of its
-- branches names that run in `parent_run` and its branch, 0-based, in
-- `lane`. Top-level runs have both NULL.
ALTER TABLE workflow_steps ADD COLUMN parent_run TEXT;
ALTER TABLE workflow_steps ADD COLUMN lane BIGINT;
CREATE INDEX workflow_steps_parent_idx ON workflow_steps (parent_run) WHERE parent_run IS NOT NULL;
