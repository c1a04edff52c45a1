//! Wake-ups between the parts that run tasks and the parts that watch
//! them, within one process and, on PostgreSQL, across instances.
//!
//! A signal carries no data, only "look again": the database stays the one
//! source of truth, so a missed signal costs latency (the periodic poll
//! heals it), never correctness. On PostgreSQL, signals written with
//! [`Signals::notify`] inside a transaction are delivered to every instance
//! when it commits (`pg_notify`); one `LISTEN` connection per instance feeds
//! them into the local channel. The most frequent ones, "a task has new
//! events", "a task was queued" and "a workflow is due", the database
//! announces itself: its triggers (migrations `0004_task_signals.sql`,
//! `0010_workflows.sql`) notify in the statement that writes the row, which
//! saves a round trip per transaction. The task workers' and the workflow
//! engine's own transactions are the exception: PostgreSQL serialises
//! notifying commits, so those raise nothing (`0025_relayed_signals.sql`,
//! `0027_relayed_workflow_signals.sql`) and the writer
//! [`Signals::announce`]s the same signals after its commit, through the
//! relay ([`super::relay`]). Each payload starts with the sending instance's id
//! ([`crate::store::Db::origin`]), so an instance ignores the echo of its
//! own signals (it published them locally already).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::store::{Backend, Tx};

/// PostgreSQL channel for "task `payload` has new events" (the trigger on
/// `task_events` names it too).
const EVENTS_CHANNEL: &str = "vel_task_events";
/// PostgreSQL channel for "new pending tasks" (the trigger on `tasks`
/// names it too).
const QUEUE_CHANNEL: &str = "vel_task_queue";
/// PostgreSQL channel for "a workflow is due" (the trigger on `workflows`
/// names it too).
const WORKFLOW_CHANNEL: &str = "vel_workflow_queue";
/// PostgreSQL channel for "a webhook delivery was queued" (the trigger on
/// `webhook_deliveries` names it too; it sends no origin, so the writing
/// instance hears it as well).
const WEBHOOK_CHANNEL: &str = "vel_webhook_queue";
/// PostgreSQL channel for "task `payload` was cancelled".
const CANCEL_CHANNEL: &str = "vel_task_cancel";
/// PostgreSQL channel for "organization `payload` changed its integrations".
const CATALOG_CHANNEL: &str = "vel_catalog";
/// PostgreSQL channel for "API key `payload` was revoked".
const KEY_CHANNEL: &str = "vel_key_revoked";
/// PostgreSQL channel for "access token `payload` was revoked".
const TOKEN_CHANNEL: &str = "vel_token_revoked";
/// PostgreSQL channel for "user `payload` changed roles, memberships or password".
const USER_CHANNEL: &str = "vel_user_changed";
/// PostgreSQL channel for "the plugin registry changed".
const PLUGINS_CHANNEL: &str = "vel_plugins";

/// Something happened to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// New events were appended to the task.
    Events(String),
    /// The task was cancelled.
    Cancelled(String),
    /// The organization's integrations changed.
    CatalogChanged(String),
    /// The API key with this id was revoked.
    KeyRevoked(String),
    /// An access token was revoked (logout, refresh); the token id.
    TokenRevoked(String),
    /// A user's role or membership changed, or their sessions ended: every
    /// credential they hold must be verified again. The user id.
    UserChanged(String),
    /// A plugin was activated, rolled back, disabled or deleted.
    PluginsChanged,
}

/// A kind of work on the queue, each with its own wake-ups so that one
/// kind's workers are never woken for the other's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    /// Tasks: provider dispatches.
    Tasks,
    /// Workflows: their engine advancing them.
    Workflows,
    /// Webhook deliveries.
    Webhooks,
}

impl WorkKind {
    /// The name in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::Tasks => "tasks",
            WorkKind::Workflows => "workflows",
            WorkKind::Webhooks => "webhooks",
        }
    }
}

/// The process's signal hub; cheap to clone.
#[derive(Debug, Clone)]
pub struct Signals {
    backend: Backend,
    /// This instance's id, the first word of every payload it sends.
    origin: Arc<str>,
    tasks: broadcast::Sender<Signal>,
    queue: Arc<Notify>,
    workflows: Arc<Notify>,
    webhooks: Arc<Notify>,
    /// On PostgreSQL once [`Signals::listen`] started it: the relay that
    /// carries [`Signals::announce`]'s signals to the other instances.
    relay: Arc<OnceLock<mpsc::UnboundedSender<super::relay::Notification>>>,
}

impl Signals {
    /// A hub for `backend`, announcing as instance `origin`.
    pub fn new(backend: Backend, origin: Arc<str>) -> Signals {
        let (tasks, _) = broadcast::channel(4096);
        Signals {
            backend,
            origin,
            tasks,
            queue: Arc::new(Notify::new()),
            workflows: Arc::new(Notify::new()),
            webhooks: Arc::new(Notify::new()),
            relay: Arc::new(OnceLock::new()),
        }
    }

    /// Receive task signals from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.tasks.subscribe()
    }

    /// Wait until work of `kind` may be due.
    pub async fn due(&self, kind: WorkKind) {
        self.notify_of(kind).notified().await;
    }

    fn notify_of(&self, kind: WorkKind) -> &Notify {
        match kind {
            WorkKind::Tasks => &self.queue,
            WorkKind::Workflows => &self.workflows,
            WorkKind::Webhooks => &self.webhooks,
        }
    }

    /// Announce, inside `conn`'s transaction, that `signal` happened; other
    /// instances hear it on commit. Call [`Signals::publish`] after the
    /// commit for this instance. [`Signal::Events`] needs no call: appending
    /// the event announced it.
    pub async fn notify(
        &self,
        conn: &mut AnyConnection,
        signal: &Signal,
    ) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            let (channel, payload) = match signal {
                Signal::Events(_) => return Ok(()),
                Signal::Cancelled(id) => (CANCEL_CHANNEL, id.as_str()),
                Signal::CatalogChanged(org_id) => (CATALOG_CHANNEL, org_id.as_str()),
                Signal::KeyRevoked(id) => (KEY_CHANNEL, id.as_str()),
                Signal::TokenRevoked(jti) => (TOKEN_CHANNEL, jti.as_str()),
                Signal::UserChanged(user_id) => (USER_CHANNEL, user_id.as_str()),
                Signal::PluginsChanged => (PLUGINS_CHANNEL, ""),
            };
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(format!("{} {payload}", self.origin))
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// Commit `tx` announcing `signal`: notified inside the transaction
    /// (other instances hear it on commit), published here once committed.
    /// Callers drop their own instance's cached state right after.
    pub async fn commit_with(&self, mut tx: Tx, signal: Signal) -> Result<(), sqlx::Error> {
        self.notify(&mut tx, &signal).await?;
        tx.commit().await?;
        self.publish(signal);
        Ok(())
    }

    /// Tell this process's watchers (after the commit).
    pub fn publish(&self, signal: Signal) {
        let _ = self.tasks.send(signal);
    }

    /// Tell this process's watchers that `signal` happened, and on
    /// PostgreSQL the other instances too, through the relay: for the
    /// writes of a transaction begun with
    /// [`crate::store::Db::tenant_relayed`] (or its kin), which signal
    /// nothing themselves. Call it after the commit. Only
    /// [`Signal::Events`] is relayed; the others travel with
    /// [`Signals::notify`].
    pub fn announce(&self, signal: Signal) {
        if let Signal::Events(id) = &signal {
            self.relay(EVENTS_CHANNEL, id);
        }
        self.publish(signal);
    }

    /// Tell the other instances (on PostgreSQL) that new tasks are pending,
    /// but none of this process's workers: for the tasks a task worker's
    /// relayed transaction queued, which that worker claims next itself
    /// (waking another when there is more, as every claim does). Waking an
    /// idle worker too would only race it for the same task.
    pub fn announce_queued_elsewhere(&self) {
        self.relay(QUEUE_CHANNEL, "");
    }

    /// Tell one of this process's idle workers of `kind` that work is due,
    /// and on PostgreSQL the other instances too, through the relay: for
    /// the work a relayed transaction queued (see [`Signals::announce`]).
    pub fn announce_due(&self, kind: WorkKind) {
        let channel = match kind {
            WorkKind::Tasks => QUEUE_CHANNEL,
            WorkKind::Workflows => WORKFLOW_CHANNEL,
            WorkKind::Webhooks => WEBHOOK_CHANNEL,
        };
        self.relay(channel, "");
        self.publish_due(kind);
    }

    /// Hand `payload` on `channel` to the relay, when there is one.
    fn relay(&self, channel: &'static str, payload: &str) {
        if let Some(relay) = self.relay.get() {
            // Gone only when the process is ending.
            let _ = relay.send((channel, format!("{} {payload}", self.origin)));
        }
    }

    /// Tell one of this process's idle workers of `kind` that work is due
    /// (a worker that claims something while more is due passes the word
    /// on, so a burst wakes as many workers as it needs, one at a time).
    pub fn publish_due(&self, kind: WorkKind) {
        self.notify_of(kind).notify_one();
    }

    /// On PostgreSQL, listen for other instances' signals until the
    /// process ends, reconnecting after failures, and start the relay that
    /// sends this instance's announcements.
    pub fn listen(&self, database_url: &str) {
        if self.backend != Backend::Postgres {
            return;
        }
        let url = database_url.to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        if self.relay.set(tx).is_ok() {
            tokio::spawn(super::relay::run(url.clone(), rx));
        }
        let signals = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = signals.listen_once(&url).await {
                    tracing::warn!(error = %e, "task signal listener failed; reconnecting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn listen_once(&self, url: &str) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect(url).await?;
        listener
            .listen_all([
                EVENTS_CHANNEL,
                QUEUE_CHANNEL,
                WORKFLOW_CHANNEL,
                WEBHOOK_CHANNEL,
                CANCEL_CHANNEL,
                CATALOG_CHANNEL,
                KEY_CHANNEL,
                TOKEN_CHANNEL,
                USER_CHANNEL,
                PLUGINS_CHANNEL,
            ])
            .await?;
        // Anything may have happened while we were not listening.
        self.publish_due(WorkKind::Tasks);
        self.publish_due(WorkKind::Workflows);
        self.publish_due(WorkKind::Webhooks);
        self.publish(Signal::PluginsChanged);
        loop {
            let n = listener.recv().await?;
            let (origin, payload) = n.payload().split_once(' ').unwrap_or(("", n.payload()));
            if origin == &*self.origin {
                continue;
            }
            let payload = payload.to_string();
            match n.channel() {
                EVENTS_CHANNEL => self.publish(Signal::Events(payload)),
                CANCEL_CHANNEL => self.publish(Signal::Cancelled(payload)),
                CATALOG_CHANNEL => self.publish(Signal::CatalogChanged(payload)),
                KEY_CHANNEL => self.publish(Signal::KeyRevoked(payload)),
                TOKEN_CHANNEL => self.publish(Signal::TokenRevoked(payload)),
                USER_CHANNEL => self.publish(Signal::UserChanged(payload)),
                PLUGINS_CHANNEL => self.publish(Signal::PluginsChanged),
                WORKFLOW_CHANNEL => self.publish_due(WorkKind::Workflows),
                WEBHOOK_CHANNEL => self.publish_due(WorkKind::Webhooks),
                _ => self.publish_due(WorkKind::Tasks),
            }
        }
    }
}
