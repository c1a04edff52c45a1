-- Task signals announced by the database itself (PostgreSQL only; SQLite
-- serves one instance, which signals in process).
--
-- Every event appended to a task, and every task inserted as pending,
-- notifies the other instances when its transaction commits, in the
-- statement that wrote it: no `SELECT pg_notify(...)` round trip of its own.
-- Channels and payloads are the ones `orchestrator::signals` listens for:
-- the writing instance's id first (`app.origin`, set on each of its pool's
-- connections), so an instance ignores the echo of its own writes. Several
-- events of one task in one transaction are delivered once: PostgreSQL
-- folds identical notifications of a transaction.

CREATE FUNCTION vel_notify_task_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vel_task_events',
                      coalesce(current_setting('app.origin', true), '') || ' ' || NEW.task_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER task_events_notify
    AFTER INSERT ON task_events
    FOR EACH ROW EXECUTE FUNCTION vel_notify_task_event();

CREATE FUNCTION vel_notify_task_queued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vel_task_queue', coalesce(current_setting('app.origin', true), '') || ' ');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_queued
    AFTER INSERT ON tasks
    FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION vel_notify_task_queued();
