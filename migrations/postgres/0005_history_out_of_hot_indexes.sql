-- Finished tasks leave the indexes that only unfinished ones need
-- (PostgreSQL only: SQLite proves a partial index usable only when a query
-- repeats its condition word for word, and writes in process anyway).
--
-- The queue is read for `pending` and `in_progress` rows only, and the
-- per-user limit counts only those; an idempotency key is looked up only
-- when there is one. As partial indexes they stay as small as the work in
-- flight however long the history grows, and a finished task written in one
-- go (every gateway request) updates two indexes instead of five.
-- An attempt's organization is its task's, whose foreign key already
-- cascades, so its own foreign key is dropped: one check less per attempt.

DROP INDEX tasks_queue_idx;
CREATE INDEX tasks_queue_idx ON tasks (status, priority DESC, created_at)
    WHERE status IN ('pending', 'in_progress');

DROP INDEX tasks_user_status_idx;
CREATE INDEX tasks_unfinished_by_user_idx ON tasks (user_id)
    WHERE status IN ('pending', 'in_progress');

DROP INDEX tasks_idempotency_idx;
CREATE UNIQUE INDEX tasks_idempotency_idx ON tasks (org_id, user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_org_id_fkey;
