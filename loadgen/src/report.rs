//! The run report: a serializable summary (for `--json`) and its
//! human-readable rendering.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Publish-to-receive latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct Latency {
    /// Number of samples.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p999: u64,
    /// Maximum.
    pub(crate) max: u64,
    /// Mean.
    pub(crate) mean: f64,
}

impl Latency {
    /// Summarizes a histogram (all zero when empty).
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Counts of non-message events.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct OtherEventCounts {
    /// `reset`.
    pub(crate) reset: u64,
    /// `shutdown`.
    pub(crate) shutdown: u64,
    /// `token_expired`.
    pub(crate) token_expired: u64,
    /// Repeated `connected`.
    pub(crate) extra_connected: u64,
    /// Anything else.
    pub(crate) other: u64,
}

impl OtherEventCounts {
    fn total(&self) -> u64 {
        self.reset + self.shutdown + self.token_expired + self.extra_connected + self.other
    }
}

/// An error message and how often it occurred.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct ErrorSample {
    /// The message.
    pub(crate) message: String,
    /// Occurrences.
    pub(crate) count: u64,
}

/// Everything a run reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct Report {
    /// `publish` or `idle`.
    pub(crate) mode: &'static str,
    /// How subscribers connect: `sse` or `ws`.
    pub(crate) transport: &'static str,
    /// Hub base URLs.
    pub(crate) urls: Vec<String>,
    /// Subscribers that became ready.
    pub(crate) connections: u64,
    /// Subscribers asked for.
    pub(crate) connections_requested: u64,
    /// Subscribers that failed to become ready.
    pub(crate) connect_errors: u64,
    /// From the first connect to the last ready subscriber.
    pub(crate) connect_secs: f64,
    /// CPU time the hub process spent while the subscribers connected, per ready
    /// subscriber (needs `--hub-pid`): what a connection costs the server, whether
    /// or not it was the server that set the pace.
    pub(crate) hub_cpu_us_per_connect: Option<f64>,
    /// CPU time this load generator spent while its subscribers connected, per
    /// ready subscriber.
    pub(crate) loadgen_cpu_us_per_connect: Option<f64>,
    /// `connections / connect_secs`.
    pub(crate) connects_per_sec: f64,
    /// Ready subscribers whose stream later ended or failed.
    pub(crate) disconnects: u64,
    /// Channels.
    pub(crate) channels: u64,
    /// Events asked for.
    pub(crate) events_requested: u64,
    /// Events written to the hub.
    pub(crate) events_attempted: u64,
    /// Events the hub acknowledged.
    pub(crate) events_published: u64,
    /// From the first publish request to the last acknowledgement.
    pub(crate) publish_secs: f64,
    /// `events_published / publish_secs`.
    pub(crate) publishes_per_sec: f64,
    /// Events refused or unanswered.
    pub(crate) publish_errors: u64,
    /// Sum over acknowledged events of the ready subscribers of their channel.
    pub(crate) deliveries_expected: u64,
    /// Distinct deliveries received.
    pub(crate) deliveries: u64,
    /// `deliveries_expected - deliveries` (never negative).
    pub(crate) lost: u64,
    /// Same event received again on the same connection.
    pub(crate) duplicates: u64,
    /// Distinct deliveries that arrived after a later event of the channel.
    pub(crate) reordered: u64,
    /// Late arrivals too far out of order to classify (not counted as
    /// deliveries).
    pub(crate) out_of_window: u64,
    /// Messages without `"t"`/`"s"` in their data.
    pub(crate) unparsed_messages: u64,
    /// `deliveries` / time from the first publish to the last delivery.
    pub(crate) deliveries_per_sec: f64,
    /// Latency percentiles.
    pub(crate) latency_us: Latency,
    /// Hub RSS before connecting.
    pub(crate) rss_before_bytes: Option<u64>,
    /// Hub RSS with the connections open.
    pub(crate) rss_after_bytes: Option<u64>,
    /// `(after - before) / connections`.
    pub(crate) rss_per_connection_bytes: Option<f64>,
    /// Where RSS came from: `proc` or `stats`.
    pub(crate) rss_source: &'static str,
    /// Connections the hub reported in `/stats` with ours open.
    pub(crate) hub_connections: Option<u64>,
    /// Non-message events.
    pub(crate) other_events: OtherEventCounts,
    /// Comment lines (heartbeats) received.
    pub(crate) heartbeats: u64,
    /// The global timeout cut the run short.
    pub(crate) timed_out: bool,
    /// Total wall time of the run.
    pub(crate) run_secs: f64,
    /// First distinct error messages.
    pub(crate) errors: Vec<ErrorSample>,
    /// Remarks about the settings (e.g. adjusted values).
    pub(crate) notes: Vec<String>,
}

/// `num / secs`, or 0 when there is no time span.
pub(crate) fn per_sec(num: u64, secs: f64) -> f64 {
    if secs > 0.0 { num as f64 / secs } else { 0.0 }
}

fn bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    format!("{:.1} MiB", b as f64 / MIB)
}

impl Report {
    /// Multi-line summary for people.
    pub(crate) fn human(&self) -> String {
        let mut s = String::new();
        let _ = self.write_human(&mut s);
        s
    }

    fn write_human(&self, s: &mut String) -> std::fmt::Result {
        writeln!(
            s,
            "herald-loadgen ({} mode, {} subscribers) against {}",
            self.mode,
            self.transport,
            self.urls.join(", ")
        )?;
        writeln!(
            s,
            "connections   {} of {} ready over {} channels, {} failed, {} dropped later",
            self.connections,
            self.connections_requested,
            self.channels,
            self.connect_errors,
            self.disconnects
        )?;
        writeln!(
            s,
            "connect       {:.3} s, {:.0} connections/s",
            self.connect_secs, self.connects_per_sec
        )?;
        if self.mode == "publish" {
            writeln!(
                s,
                "publish       {} of {} events acknowledged ({} errors) in {:.3} s, {:.0} events/s",
                self.events_published,
                self.events_requested,
                self.publish_errors,
                self.publish_secs,
                self.publishes_per_sec
            )?;
            writeln!(
                s,
                "deliveries    {} of {} expected, {} lost, {} duplicates, {} reordered, {:.0} deliveries/s",
                self.deliveries,
                self.deliveries_expected,
                self.lost,
                self.duplicates,
                self.reordered,
                self.deliveries_per_sec
            )?;
            if self.out_of_window > 0 || self.unparsed_messages > 0 {
                writeln!(
                    s,
                    "              {} late arrivals out of window, {} messages without t/s",
                    self.out_of_window, self.unparsed_messages
                )?;
            }
            let l = &self.latency_us;
            writeln!(
                s,
                "latency (us)  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.0}, {} samples)",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.count
            )?;
        }
        match (self.rss_before_bytes, self.rss_after_bytes) {
            (Some(b), Some(a)) => {
                write!(
                    s,
                    "hub rss       {} before, {} after ({})",
                    bytes(b),
                    bytes(a),
                    self.rss_source
                )?;
                if let Some(per) = self.rss_per_connection_bytes {
                    write!(s, ", {per:.0} bytes per connection")?;
                }
                writeln!(s)?;
            }
            _ => writeln!(
                s,
                "hub rss       unavailable (give --hub-pid, or expose rss_bytes in /stats)"
            )?,
        }
        if let Some(c) = self.hub_connections {
            writeln!(s, "hub reports   {c} connections")?;
        }
        if let (Some(hub), Some(own)) =
            (self.hub_cpu_us_per_connect, self.loadgen_cpu_us_per_connect)
        {
            writeln!(
                s,
                "connect cpu   hub {hub:.1} us, load generator {own:.1} us per connection"
            )?;
        }
        let o = &self.other_events;
        if o.total() > 0 {
            writeln!(
                s,
                "other events  reset {}, shutdown {}, token_expired {}, repeated connected {}, other {}",
                o.reset, o.shutdown, o.token_expired, o.extra_connected, o.other
            )?;
        }
        writeln!(s, "heartbeats    {}", self.heartbeats)?;
        if self.timed_out {
            writeln!(s, "TIMED OUT     the global --timeout ended the run early")?;
        }
        for note in &self.notes {
            writeln!(s, "note          {note}")?;
        }
        if !self.errors.is_empty() {
            writeln!(s, "errors (first distinct messages):")?;
            for e in &self.errors {
                writeln!(s, "  {:>7} x {}", e.count, e.message)?;
            }
        }
        writeln!(s, "run time      {:.3} s", self.run_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary() -> anyhow::Result<()> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
        assert_eq!(Latency::from_histogram(&h), Latency::default());
        for v in 1..=1000 {
            h.record(v)?;
        }
        let l = Latency::from_histogram(&h);
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50, 500);
        assert_eq!(l.p90, 900);
        assert_eq!(l.p99, 990);
        assert_eq!(l.p999, 999);
        assert_eq!(l.max, 1000);
        Ok(())
    }

    #[test]
    fn json_has_the_documented_fields() -> anyhow::Result<()> {
        let r = Report {
            mode: "publish",
            transport: "sse",
            ..Report::default()
        };
        let v = serde_json::to_value(&r)?;
        for key in [
            "connections",
            "connect_secs",
            "connects_per_sec",
            "channels",
            "events_published",
            "publish_secs",
            "publishes_per_sec",
            "publish_errors",
            "deliveries_expected",
            "deliveries",
            "lost",
            "duplicates",
            "deliveries_per_sec",
            "rss_before_bytes",
            "rss_after_bytes",
            "rss_per_connection_bytes",
            "other_events",
            "connect_errors",
            "hub_cpu_us_per_connect",
            "loadgen_cpu_us_per_connect",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_us"].get(key).is_some(), "missing latency {key}");
        }
        assert!(r.human().contains("publish mode"));
        assert_eq!(per_sec(10, 0.0), 0.0);
        assert_eq!(per_sec(10, 2.0), 5.0);
        Ok(())
    }
}
