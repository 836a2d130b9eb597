//! Prometheus metrics, written by hand in the text format: a few histograms kept here, and
//! gauges read from the database at scrape time (so they are right with several coordinators).

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-bucket histogram of seconds.
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            inner: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    pub fn observe(&self, v: f64) {
        if let Ok(mut h) = self.inner.lock() {
            for (i, b) in self.bounds.iter().enumerate() {
                if v <= *b {
                    h.0[i] += 1;
                }
            }
            h.1 += v;
            h.2 += 1;
        }
    }

    /// How many were observed and their sum.
    pub fn summary(&self) -> pxs_protocol::api::SecondsSummary {
        match self.inner.lock() {
            Ok(h) => pxs_protocol::api::SecondsSummary {
                count: h.2,
                sum: h.1,
            },
            Err(_) => pxs_protocol::api::SecondsSummary::default(),
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let Ok(h) = self.inner.lock() else { return };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, n) in self.bounds.iter().zip(&h.0) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.2);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.1, h.2);
    }
}

pub struct Metrics {
    /// Time to decide and record a new session (the placement transaction).
    pub placement: Histogram,
    /// From `start_session` sent to the node reporting the session ready.
    pub start: Histogram,
    /// Placements decided again because their node filled meanwhile or they would queue
    /// (PostgreSQL, where placements run side by side; see `Engine::create_session`).
    pub placement_retries: Counter,
}

/// A counter that only goes up.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            placement: Histogram::new(LATENCY_BUCKETS),
            start: Histogram::new(LATENCY_BUCKETS),
            placement_retries: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn render_histograms(&self, out: &mut String) {
        self.placement.render(
            out,
            "pxs_placement_seconds",
            "Time to place and record a new session.",
        );
        self.start.render(
            out,
            "pxs_session_start_seconds",
            "Time from start_session sent to the session ready.",
        );
        let _ = writeln!(
            out,
            "# HELP pxs_placement_retries_total Placements decided again: their node filled \
             meanwhile, or they would queue (PostgreSQL).\n\
             # TYPE pxs_placement_retries_total counter\n\
             pxs_placement_retries_total {}",
            self.placement_retries.get()
        );
    }
}

/// One gauge with a label per value.
pub fn render_gauge(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, i64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (l, v) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{l}\"}} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_cumulatively() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.1\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3"));
        let s = h.summary();
        assert_eq!((s.count, s.sum), (3, 5.55));
    }
}
