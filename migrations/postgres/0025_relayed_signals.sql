-- Task signals relayed after the commit (PostgreSQL only).
--
-- PostgreSQL serialises the commits of every transaction that notified,
-- across the whole cluster, and a durable commit holds that turn through
-- its WAL flush: with the signals of 0004 raised inside the task workers'
-- transactions, their commits queued behind one another. A transaction
-- begun with `app.relay` on (`store::Db::tenant_relayed` and its kin)
-- raises none: its instance announces the same signals once it has
-- committed, through a connection of its own whose commits do not wait for
-- the flush (`orchestrator::signals`, the relay). Every other writer still
-- signals from these triggers.

CREATE OR REPLACE FUNCTION vel_notify_task_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('app.relay', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('vel_task_events',
                      coalesce(current_setting('app.origin', true), '') || ' ' || NEW.task_id);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION vel_notify_task_queued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('app.relay', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('vel_task_queue', coalesce(current_setting('app.origin', true), '') || ' ');
    RETURN NULL;
END
$$;
