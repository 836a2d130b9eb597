//! What the signalling server counts, in Prometheus' text format, and the gate that keeps an
//! event's log line to one per interval however often the event happens.
//!
//! Every event of overload or bad input from an application (a streamer not reading, a message
//! dropped) gets a counter here and a rate-limited warning: never silent, never a log flood.

use crate::backpressure::BacklogStats;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// How often one kind of event may log a line; the line says how many were not logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of event's log line, at most once per [`LOG_INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct LogGate {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogGate {
    /// `Some(n)`: log now, `n` events were not logged since the last line. `None`: stay quiet
    /// (the event is counted for the next line).
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.saturating_duration_since(at) < LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Counters of one signalling session (a standalone server has one). Totals count since start;
/// the fields without `_total` in their metric name are gauges (the state now).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages for streamers (and SFUs) whose send queue was full: held, dropped, players paused.
    pub backlog: BacklogStats,
    /// Players closed because they did not read what they were sent (their queue was full).
    pub slow_players_closed: u64,
    /// Streamers (and SFUs) closed because a write to them took the whole write timeout: they
    /// took no byte for that long.
    pub streamers_write_timeout: u64,
    /// Connections the server closed whose close frame could not be written within the write
    /// timeout (the peer took no bytes): dropped without it.
    pub closes_undelivered: u64,
    /// Messages from streamers (and SFUs) dropped because they could not be parsed.
    pub streamer_invalid_dropped: u64,
    /// Messages from streamers (and SFUs) over `max_message_size` (and within
    /// `streamer_max_message_size`), dropped.
    pub streamer_oversized_dropped: u64,
}

impl Stats {
    /// The counters in Prometheus' text exposition format.
    pub fn render_prometheus(&self) -> String {
        let b = &self.backlog;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        metric(
            "pxs_signalling_streamer_stalls_total",
            "counter",
            "Times a streamer's (or SFU's) send queue filled: its messages were held and the players feeding it paused.",
            &[("", b.stalls)],
        );
        metric(
            "pxs_signalling_streamers_stalled",
            "gauge",
            "Streamers (and SFUs) whose messages are being held now.",
            &[("", b.stalled)],
        );
        metric(
            "pxs_signalling_streamer_held_messages_total",
            "counter",
            "Messages held for a stalled streamer, delivered once it reads again.",
            &[("", b.held_total)],
        );
        metric(
            "pxs_signalling_streamer_held_messages",
            "gauge",
            "Messages held for stalled streamers now.",
            &[("", b.held)],
        );
        metric(
            "pxs_signalling_players_paused_total",
            "counter",
            "Times the server stopped reading a player because the streamer it feeds was stalled.",
            &[("", b.players_paused)],
        );
        metric(
            "pxs_signalling_streamer_ice_dropped_total",
            "counter",
            "Players' ICE candidates for a stalled streamer dropped over the ICE backlog limit.",
            &[("", b.ice_dropped)],
        );
        metric(
            "pxs_signalling_players_closed_streamer_busy_total",
            "counter",
            "Players closed (1013) because their message would have passed a stalled streamer's backlog limit.",
            &[("", b.players_closed)],
        );
        metric(
            "pxs_signalling_streamers_closed_backlog_full_total",
            "counter",
            "Stalled streamers (or SFUs) closed as gone (1001): their backlog reached its total limit.",
            &[("", b.streamers_closed)],
        );
        metric(
            "pxs_signalling_streamer_held_discarded_total",
            "counter",
            "Messages held (or queued) for a stalled streamer (or SFU) discarded because it went away or was closed.",
            &[("", b.held_discarded)],
        );
        metric(
            "pxs_signalling_streamers_closed_write_timeout_total",
            "counter",
            "Streamers (and SFUs) closed because a write to them took the whole write timeout (they read nothing).",
            &[("", self.streamers_write_timeout)],
        );
        metric(
            "pxs_signalling_closes_undelivered_total",
            "counter",
            "Connections closed by the server whose close frame could not be written within the write timeout (the peer took no bytes): dropped without it.",
            &[("", self.closes_undelivered)],
        );
        metric(
            "pxs_signalling_slow_players_closed_total",
            "counter",
            "Players closed because they did not read (their send queue was full).",
            &[("", self.slow_players_closed)],
        );
        metric(
            "pxs_signalling_streamer_messages_dropped_total",
            "counter",
            "Messages from streamers (and SFUs) logged and dropped: unparsable, or over max_message_size.",
            &[
                ("{reason=\"invalid\"}", self.streamer_invalid_dropped),
                ("{reason=\"oversized\"}", self.streamer_oversized_dropped),
            ],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_one_line_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut g = LogGate::default();
        assert_eq!(g.admit(t0), Some(0));
        assert_eq!(g.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(g.admit(t0 + Duration::from_secs(9)), None);
        assert_eq!(g.admit(t0 + LOG_INTERVAL), Some(2));
        assert_eq!(g.admit(t0 + LOG_INTERVAL * 3), Some(0));
    }

    #[test]
    fn stats_render_as_prometheus_text() {
        let s = Stats {
            backlog: BacklogStats {
                stalls: 2,
                ice_dropped: 7,
                ..Default::default()
            },
            streamer_invalid_dropped: 3,
            ..Default::default()
        };
        let text = s.render_prometheus();
        assert!(
            text.contains("pxs_signalling_streamer_stalls_total 2\n"),
            "{text}"
        );
        assert!(text.contains("pxs_signalling_streamer_ice_dropped_total 7\n"));
        assert!(
            text.contains("pxs_signalling_streamer_messages_dropped_total{reason=\"invalid\"} 3\n")
        );
        assert!(text.contains("# TYPE pxs_signalling_streamers_stalled gauge\n"));
        // Every sample line is `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            v.parse::<u64>().unwrap();
        }
    }
}
