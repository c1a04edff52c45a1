//! Usage analytics: what an organization's requests and tasks did, by
//! minute, provider, model, agent and source, with latency percentiles.
//!
//! Every finished gateway request and task adds a [`buckets::Sample`] to a
//! one-minute bucket. Buckets are written append-only, never updated: the
//! gateway's batched usage writer writes one row per bucket touched by its
//! batch, a queued task's finish writes its own row in the transaction that
//! finishes it. So no two writers ever contend for a row, on one instance or
//! many, and nothing is counted twice or lost. Readers merge the rows of a
//! range ([`service`]); counters add, and latency is a mergeable
//! [`latency::Latency`] sketch, so percentiles over any range come from the
//! buckets with a stated relative error. A roll-up ([`rollup`]) merges
//! minutes into hours and hours into days, once across all instances, and
//! deletes minutes and hours past their retention; readers take each period
//! at the coarsest resolution that holds it. The same background pass
//! compares each finished minute with the hour before it and raises
//! [`anomaly`] alerts.

pub mod anomaly;
pub mod buckets;
pub mod latency;
pub mod metrics;
pub mod rollup;
pub mod service;
