//! The mock's shared, mutable state: script, settings, records and counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;

use crate::fault::Script;
use crate::stats::Counters;
use crate::{Fault, RecordedRequest};

/// Shared between the [`crate::MockUpstream`] handle and every connection task.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) counters: Arc<Counters>,
    script: Mutex<Script>,
    latency_micros: AtomicU64,
    recording: AtomicBool,
    api_key: RwLock<Option<String>>,
    records: Mutex<Vec<RecordedRequest>>,
    completion_seq: AtomicU64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            counters: Arc::default(),
            script: Mutex::default(),
            latency_micros: AtomicU64::new(0),
            recording: AtomicBool::new(true),
            api_key: RwLock::new(None),
            records: Mutex::default(),
            completion_seq: AtomicU64::new(0),
        }
    }
}

/// A poisoned lock only means a test panicked elsewhere; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    pub(crate) fn script(&self) -> MutexGuard<'_, Script> {
        lock(&self.script)
    }

    /// Numbers completion requests from 1.
    pub(crate) fn next_completion_seq(&self) -> u64 {
        self.completion_seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_micros.load(Ordering::Relaxed))
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros.store(micros, Ordering::Relaxed);
    }

    pub(crate) fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    pub(crate) fn api_key(&self) -> Option<String> {
        self.api_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_api_key(&self, key: Option<String>) {
        *self.api_key.write().unwrap_or_else(PoisonError::into_inner) = key;
    }

    /// Records a request if recording is on.
    pub(crate) fn record(&self, parts: &Parts, body: &Bytes, fault: Option<Fault>) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let record = RecordedRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: serde_json::from_slice(body).ok(),
            fault,
        };
        lock(&self.records).push(record);
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.records).clone()
    }

    pub(crate) fn clear_requests(&self) {
        lock(&self.records).clear();
    }
}
