-- Two questions asked inside write transactions name an organization and a
-- status: how much unfinished work an organization has (its limit, checked
-- on every submission: tasks, workflows and batches) and how many tasks
-- each organization with pending work is running (the fair claim, on every
-- claim). Without statistics SQLite answered them through the
-- (org_id, created_at) indexes, reading every task, workflow and batch the
-- organization ever had: each write transaction grew slower with the
-- history (8 ms at 12 MB, 75 ms at 220 MB under bench/soak.sh) and every
-- other writer queued behind it. With these indexes each is a seek.
-- (PostgreSQL's planner has statistics, and the partial indexes of its 0005.)
CREATE INDEX tasks_org_status_idx ON tasks (org_id, status);
CREATE INDEX workflows_org_status_idx ON workflows (org_id, status);
CREATE INDEX batches_org_status_idx ON batches (org_id, status);
