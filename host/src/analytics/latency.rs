//! A latency distribution that merges exactly and answers percentiles with
//! a bounded relative error: a DDSketch of microseconds.

use std::time::Duration;

use sketches_ddsketch::{Config, DDSketch};

/// The relative error of every percentile a [`Latency`] answers: the true
/// value at that rank is within this fraction of the answer.
pub const RELATIVE_ERROR: f64 = 0.01;

/// A stored sketch could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("latency sketch: {0}")]
pub struct SketchError(String);

/// Latencies seen in one bucket (or merged from many).
#[derive(Clone)]
pub struct Latency(DDSketch);

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.count())
            .finish()
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency(DDSketch::new(Config::new(RELATIVE_ERROR, 2048, 1.0e-9)))
    }
}

impl Latency {
    /// Add one latency.
    pub fn add(&mut self, latency: Duration) {
        self.0.add(latency.as_micros() as f64);
    }

    /// Add every latency of `other` (same relative error: always true of
    /// sketches made here).
    pub fn merge(&mut self, other: &Latency) -> Result<(), SketchError> {
        self.0
            .merge(&other.0)
            .map_err(|e| SketchError(e.to_string()))
    }

    /// Latencies added.
    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// The latency at quantile `q` (0–1) in milliseconds, within
    /// [`RELATIVE_ERROR`]; `None` when empty or `q` is out of range.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.0
            .quantile(q)
            .ok()
            .flatten()
            .map(|us| (us / 1000.0).max(0.0))
    }

    /// The sketch in DDSketch's portable binary encoding, for storage.
    pub fn encode(&self) -> Vec<u8> {
        self.0.to_java_bytes()
    }

    /// A sketch stored by [`Latency::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Latency, SketchError> {
        DDSketch::from_java_bytes(bytes)
            .map(Latency)
            .map_err(|e| SketchError(format!("{e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value at DDSketch's rank for `q` (the rank it answers for).
    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
    }

    #[test]
    fn percentiles_are_within_the_stated_error_after_merging_and_storing() {
        // A long-tailed spread from 40 µs to about 2 s, split over buckets.
        let mut all = Vec::new();
        let mut parts = vec![Latency::default(), Latency::default(), Latency::default()];
        let mut x: u64 = 12_345;
        for i in 0..30_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let us = 40
                + (x >> 33) % 2_000
                + if i % 97 == 0 {
                    (x >> 20) % 2_000_000
                } else {
                    0
                };
            all.push(us as f64 / 1000.0);
            parts[i % 3].add(Duration::from_micros(us));
        }
        all.sort_by(f64::total_cmp);
        let mut merged = Latency::default();
        for part in &parts {
            let stored = Latency::decode(&part.encode()).unwrap();
            merged.merge(&stored).unwrap();
        }
        assert_eq!(merged.count(), 30_000);
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let got = merged.quantile_ms(q).unwrap();
            let want = exact(&all, q);
            assert!(
                (got - want).abs() <= want * RELATIVE_ERROR,
                "p{q}: sketch {got} ms, exact {want} ms"
            );
        }
    }

    #[test]
    fn an_empty_sketch_has_no_percentiles() {
        let empty = Latency::decode(&Latency::default().encode()).unwrap();
        assert_eq!(empty.count(), 0);
        assert_eq!(empty.quantile_ms(0.5), None);
        assert!(Latency::decode(b"\xff\xff\xff").is_err());
    }
}
