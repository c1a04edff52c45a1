-- Workflow and webhook signals relayed after the commit too (PostgreSQL
-- only), as 0025 did for task signals: a workflow's step task ends, its
-- workflow's next moves and their webhook deliveries commit together in a
-- transaction begun with `app.relay` on, and the instance announces what
-- they raised once it has committed (`orchestrator::signals`). Every other
-- writer still signals from these triggers.

CREATE OR REPLACE FUNCTION vel_notify_workflow_due() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('app.relay', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('vel_workflow_queue', coalesce(current_setting('app.origin', true), '') || ' ');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION vel_notify_workflow_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('app.relay', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('vel_task_events',
                      coalesce(current_setting('app.origin', true), '') || ' ' || NEW.workflow_id);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION vel_notify_webhook_due() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('app.relay', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('vel_webhook_queue', ' ');
    RETURN NULL;
END
$$;
