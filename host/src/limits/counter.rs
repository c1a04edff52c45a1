//! Window counters shared by every instance through the database. An
//! instance takes a slice of a window's allowance at a time (the database
//! adds the slice to the window's count only while the count stays within
//! the limit) and admits from its slice without a query. Every slice
//! handed out counts as admitted, so all instances together never admit
//! more than the limit; a slice left idle is handed back so that another
//! instance may use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::Kind;
use crate::store::rate_limit_rules as store;
use crate::store::{Db, now_ms};

/// A slice is at most this share of the limit (and at least one).
pub const SLICE_SHARE: i64 = 8;

/// How long an unused slice stays with an idle instance.
const IDLE_MS: i64 = 2_000;

/// Which window of a subject: a kind of limit and the window's start.
type Window = (Kind, i64);

#[derive(Debug, Default)]
struct Local {
    /// Admissions this instance holds and has not used.
    free: i64,
    /// The window's count in the database after this instance's last slice.
    counted: i64,
    /// Unix ms of the last admission.
    last_active: i64,
    /// Held while asking the database for a slice.
    granting: Arc<tokio::sync::Mutex<()>>,
}

/// An admission within a limit, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The limit.
    pub limit: i64,
    /// At least this many more fit in the window (as this instance sees it).
    pub remaining: i64,
    /// Unix ms the window ends.
    pub resets_at: i64,
}

/// The window is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The limit.
    pub limit: i64,
    /// Unix ms the window ends.
    pub resets_at: i64,
}

/// Windows by subject, so that a subject is looked up by `&str`.
type Windows = HashMap<String, HashMap<Window, Local>>;

/// This instance's share of every window it admitted into lately.
#[derive(Debug, Clone)]
pub struct Counter {
    db: Db,
    windows: Arc<Mutex<Windows>>,
}

impl Counter {
    /// Counters kept in `db`.
    pub fn new(db: Db) -> Counter {
        Counter {
            db,
            windows: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Windows> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run `f` on `subject`'s `window`, made when missing (the subject's
    /// name is copied only then).
    fn with_local<R>(&self, subject: &str, window: Window, f: impl FnOnce(&mut Local) -> R) -> R {
        let mut windows = self.lock();
        if let Some(of_subject) = windows.get_mut(subject) {
            return f(of_subject.entry(window).or_default());
        }
        f(windows
            .entry(subject.to_string())
            .or_default()
            .entry(window)
            .or_default())
    }

    /// Admit one more in `subject`'s `kind` window of `now` (unix ms, read
    /// once per request) holding at most `limit`.
    pub async fn admit(
        &self,
        subject: &str,
        kind: Kind,
        limit: i64,
        now: i64,
    ) -> Result<Result<Admitted, Full>, sqlx::Error> {
        self.take(subject, kind, limit, 1, now).await
    }

    /// Whether `subject`'s `kind` window of `now` has room left, counting
    /// nothing: the check before a request whose amount (its tokens) is
    /// known only when it ends, and then counted by [`Counter::charge`].
    /// Takes a slice when this instance holds none of the window.
    pub async fn room(
        &self,
        subject: &str,
        kind: Kind,
        limit: i64,
        now: i64,
    ) -> Result<Result<Admitted, Full>, sqlx::Error> {
        self.take(subject, kind, limit, 0, now).await
    }

    /// Take `n` (0 or 1) from this instance's slice, leasing a slice when
    /// it holds none.
    async fn take(
        &self,
        subject: &str,
        kind: Kind,
        limit: i64,
        n: i64,
        now: i64,
    ) -> Result<Result<Admitted, Full>, sqlx::Error> {
        let start = kind.window_start(now);
        let resets_at = start + kind.window_ms();
        let gate = self.with_local(subject, (kind, start), |local| {
            take_n(local, n, limit, resets_at, now).ok_or_else(|| local.granting.clone())
        });
        let gate = match gate {
            Ok(admitted) => return Ok(Ok(admitted)),
            Err(gate) => gate,
        };
        let _one_at_a_time = gate.lock().await;
        let again = self.with_local(subject, (kind, start), |local| {
            take_n(local, n, limit, resets_at, now)
        });
        if let Some(admitted) = again {
            return Ok(Ok(admitted));
        }
        let window = (subject, kind.as_str(), start);
        let mut slice = (limit / SLICE_SHARE).clamp(1, limit.max(1));
        let counted = loop {
            let mut tx = self.db.platform().await?;
            let counted = store::grant(&mut tx, window, slice, limit).await?;
            if let Some(counted) = counted {
                tx.commit().await?;
                break counted;
            }
            // Not a whole slice left: take what is.
            let left = limit - store::granted(&mut tx, window).await?;
            tx.commit().await?;
            if left <= 0 {
                return Ok(Err(Full { limit, resets_at }));
            }
            slice = slice.min(left);
        };
        let admitted = self.with_local(subject, (kind, start), |local| {
            local.free += slice;
            local.counted = counted;
            take_n(local, n, limit, resets_at, now)
        });
        Ok(Ok(admitted.unwrap_or(Admitted {
            limit,
            remaining: 0,
            resets_at,
        })))
    }

    /// Count `amount` used in `subject`'s current `kind` window, whatever
    /// the limit (it was used already): from this instance's slice, and
    /// what the slice lacks added to the database's count at once.
    pub async fn charge(&self, subject: &str, kind: Kind, amount: i64) -> Result<(), sqlx::Error> {
        if amount <= 0 {
            return Ok(());
        }
        let now = now_ms();
        let start = kind.window_start(now);
        let owed = self.with_local(subject, (kind, start), |local| {
            local.last_active = now;
            let from_slice = amount.min(local.free.max(0));
            local.free -= from_slice;
            amount - from_slice
        });
        if owed == 0 {
            return Ok(());
        }
        let mut tx = self.db.platform().await?;
        let counted = store::add(&mut tx, (subject, kind.as_str(), start), owed).await?;
        tx.commit().await?;
        self.with_local(subject, (kind, start), |local| {
            local.counted = local.counted.max(counted);
        });
        Ok(())
    }

    /// What is left of `subject`'s current `kind` window as this instance
    /// last saw it, without a query (`None` when it has not seen it).
    pub fn peek(&self, subject: &str, kind: Kind, limit: i64) -> Option<Admitted> {
        let start = kind.window_start(now_ms());
        let windows = self.lock();
        let local = windows.get(subject)?.get(&(kind, start))?;
        Some(Admitted {
            limit,
            remaining: (limit - local.counted + local.free).max(0),
            resets_at: start + kind.window_ms(),
        })
    }

    /// Undo one admission of this instance at `now` (another limit of the
    /// same request refused it).
    pub fn refund(&self, subject: &str, kind: Kind, now: i64) {
        let start = kind.window_start(now);
        if let Some(local) = self
            .lock()
            .get_mut(subject)
            .and_then(|w| w.get_mut(&(kind, start)))
        {
            local.free += 1;
        }
    }

    /// What this instance holds unused of `subject`'s current window.
    pub fn unused(&self, subject: &str, kind: Kind) -> i64 {
        let start = kind.window_start(now_ms());
        self.lock()
            .get(subject)
            .and_then(|w| w.get(&(kind, start)))
            .map_or(0, |l| l.free)
    }

    /// Hand idle slices back and forget ended windows, every second, and
    /// prune the database's ended windows every minute.
    pub fn start(&self) {
        let counter = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                ticks += 1;
                if let Err(e) = counter.hand_back().await {
                    tracing::warn!(error = %e, "handing back rate-limit slices failed");
                }
                if ticks.is_multiple_of(60)
                    && let Err(e) = counter.prune().await
                {
                    tracing::warn!(error = %e, "pruning rate-limit windows failed");
                }
            }
        });
    }

    async fn hand_back(&self) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let mut idle: Vec<(String, Window, i64)> = Vec::new();
        {
            let mut windows = self.lock();
            windows.retain(|subject, of_subject| {
                of_subject.retain(|(kind, start), _| start + kind.window_ms() > now);
                for (window, l) in of_subject.iter_mut() {
                    if l.free > 0 && now - l.last_active > IDLE_MS {
                        idle.push((subject.clone(), *window, std::mem::take(&mut l.free)));
                    }
                }
                !of_subject.is_empty()
            });
        }
        for (subject, (kind, start), amount) in idle {
            let mut tx = self.db.platform().await?;
            store::give_back(&mut tx, (&subject, kind.as_str(), start), amount).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn prune(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.db.platform().await?;
        store::prune(&mut tx, now_ms() - 2 * 3_600_000).await?;
        tx.commit().await
    }
}

/// Take `n` (0: only look) from the local slice, if it holds at least one
/// more than `n - 1`.
fn take_n(local: &mut Local, n: i64, limit: i64, resets_at: i64, now: i64) -> Option<Admitted> {
    if local.free < n.max(1) {
        return None;
    }
    local.free -= n;
    local.last_active = now;
    Some(Admitted {
        limit,
        remaining: (limit - local.counted + local.free).max(0),
        resets_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_needs_room_and_takes_nothing() {
        let mut local = Local {
            free: 1,
            counted: 10,
            ..Local::default()
        };
        let seen = take_n(&mut local, 0, 20, 60_000, 5).expect("room");
        assert_eq!((local.free, seen.remaining), (1, 11));
        let taken = take_n(&mut local, 1, 20, 60_000, 6).expect("one left");
        assert_eq!((local.free, taken.remaining, local.last_active), (0, 10, 6));
        assert_eq!(take_n(&mut local, 0, 20, 60_000, 7), None, "no slice left");
        assert_eq!(take_n(&mut local, 1, 20, 60_000, 7), None);
    }
}
