//! Counters of what the hub does, shared by every part of it, and their rendering
//! for `/stats` and Prometheus.
//!
//! Every metric name lives here. No label carries a channel name or a user id, so
//! the number of series stays fixed however many channels and users there are.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// Why an event source skipped a notification (or one route of it). The label
/// values of `herald_source_skipped_total` are exactly these, so they stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceSkip {
    /// The payload is not JSON.
    NotJson,
    /// The payload lacks a field a route needs (or it is null, an object or a list).
    MissingField,
    /// A channel built from the payload is not a valid channel name.
    BadChannel,
    /// The event built from the payload is refused (its type, its size).
    InvalidEvent,
    /// No route takes the notification's channel (outbox topics).
    NoRoute,
    /// A row that was too big to notify could not be fetched.
    FetchFailed,
    /// The hub refused the events (its broker was unavailable).
    PublishFailed,
}

impl SourceSkip {
    /// Every reason, in the order they are reported.
    pub const ALL: [SourceSkip; 7] = [
        SourceSkip::NotJson,
        SourceSkip::MissingField,
        SourceSkip::BadChannel,
        SourceSkip::InvalidEvent,
        SourceSkip::NoRoute,
        SourceSkip::FetchFailed,
        SourceSkip::PublishFailed,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            SourceSkip::NotJson => "not_json",
            SourceSkip::MissingField => "missing_field",
            SourceSkip::BadChannel => "bad_channel",
            SourceSkip::InvalidEvent => "invalid_event",
            SourceSkip::NoRoute => "no_route",
            SourceSkip::FetchFailed => "fetch_failed",
            SourceSkip::PublishFailed => "publish_failed",
        }
    }
}

/// The hub's counters. Cheap to update from any task.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    published: AtomicU64,
    deliveries: AtomicU64,
    slow_disconnects: AtomicU64,
    resumes: AtomicU64,
    resets: AtomicU64,
    replayed: AtomicU64,
    history_evicted: AtomicU64,
    auth_failures: AtomicU64,
    source_notifications: AtomicU64,
    source_skipped: [AtomicU64; SourceSkip::ALL.len()],
    source_outbox_rows: AtomicU64,
    source_connections: AtomicU64,
    broker_reconnects: AtomicU64,
    broker_caught_up: AtomicU64,
    broker_closed: AtomicU64,
    client_events: AtomicU64,
    client_events_refused: AtomicU64,
    webhooks_sent: AtomicU64,
    webhooks_failed: AtomicU64,
    publish_rate_limited: AtomicU64,
    /// With several partitions: events received from the broker, per partition.
    received: std::sync::OnceLock<Box<[AtomicU64]>>,
    /// Partitions this node follows now.
    partitions_followed: AtomicU64,
    /// Bytes of event messages read from the broker's service.
    broker_received_bytes: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            published: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            slow_disconnects: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            history_evicted: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            source_notifications: AtomicU64::new(0),
            source_skipped: Default::default(),
            source_outbox_rows: AtomicU64::new(0),
            source_connections: AtomicU64::new(0),
            broker_reconnects: AtomicU64::new(0),
            broker_caught_up: AtomicU64::new(0),
            broker_closed: AtomicU64::new(0),
            client_events: AtomicU64::new(0),
            client_events_refused: AtomicU64::new(0),
            webhooks_sent: AtomicU64::new(0),
            webhooks_failed: AtomicU64::new(0),
            publish_rate_limited: AtomicU64::new(0),
            received: std::sync::OnceLock::new(),
            partitions_followed: AtomicU64::new(0),
            broker_received_bytes: AtomicU64::new(0),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Stats {
    /// Events accepted for publication.
    pub fn published(&self, n: u64) {
        add(&self.published, n);
    }

    /// Events queued to connections, and connections found overflowing.
    pub fn delivered(&self, queued: u64, overflowed: u64) {
        add(&self.deliveries, queued);
        add(&self.slow_disconnects, overflowed);
    }

    /// A connection resumed, with how many events were replayed and whether it got a reset.
    pub fn resumed(&self, replayed: u64, reset: bool) {
        add(&self.resumes, 1);
        add(&self.replayed, replayed);
        if reset {
            add(&self.resets, 1);
        }
    }

    /// Events the history memory budget evicted before their count or age would.
    pub fn history_evicted(&self, n: u64) {
        add(&self.history_evicted, n);
    }

    /// A request presented a credential that was refused.
    pub fn auth_failed(&self) {
        add(&self.auth_failures, 1);
    }

    /// An event source received notifications (or outbox rows).
    pub fn source_received(&self, n: u64) {
        add(&self.source_notifications, n);
    }

    /// An event source skipped a notification, or one route of it.
    pub fn source_skipped(&self, why: SourceSkip) {
        add(&self.source_skipped[why as usize], 1);
    }

    /// How many notifications were skipped for `why`.
    pub fn source_skips(&self, why: SourceSkip) -> u64 {
        get(&self.source_skipped[why as usize])
    }

    /// An event source published outbox rows and recorded them as done.
    pub fn source_outbox_done(&self, n: u64) {
        add(&self.source_outbox_rows, n);
    }

    /// An event source (re)connected to its service.
    pub fn source_connected(&self) {
        add(&self.source_connections, 1);
    }

    /// The broker reconnected to its service after losing it.
    pub fn broker_reconnected(&self) {
        add(&self.broker_reconnects, 1);
    }

    /// Events this node had missed live (its subscription dropped) and delivered
    /// from the broker's log instead.
    pub fn broker_caught_up(&self, n: u64) {
        add(&self.broker_caught_up, n);
    }

    /// Connections closed because this node may have missed events for them; their
    /// clients resume from history.
    pub fn broker_closed(&self, n: u64) {
        add(&self.broker_closed, n);
    }

    /// Counts the events received from the broker per partition from now on, over
    /// `count` partitions (called once, by a broker of several partitions).
    pub fn count_partitions(&self, count: u16) {
        let _ = self
            .received
            .set((0..count).map(|_| AtomicU64::new(0)).collect());
    }

    /// The broker handed this node an event of `partition`.
    pub fn received(&self, partition: u16) {
        if let Some(counter) = self
            .received
            .get()
            .and_then(|r| r.get(usize::from(partition)))
        {
            add(counter, 1);
        }
    }

    /// The broker read `n` bytes of event messages from its service.
    pub fn broker_received_bytes(&self, n: usize) {
        add(&self.broker_received_bytes, n as u64);
    }

    /// This node started (`true`) or stopped following a partition.
    pub fn partition_followed(&self, following: bool) {
        if following {
            self.partitions_followed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.partitions_followed.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A client published an event (accepted or not).
    pub fn client_event(&self, accepted: bool) {
        add(&self.client_events, 1);
        if !accepted {
            add(&self.client_events_refused, 1);
        }
    }

    /// A webhook request was sent.
    pub fn webhook_sent(&self) {
        add(&self.webhooks_sent, 1);
    }

    /// A webhook could not be delivered after its retries.
    pub fn webhook_failed(&self) {
        add(&self.webhooks_failed, 1);
    }

    /// A publish request was refused by a publisher rate limit.
    pub fn publish_rate_limited(&self) {
        add(&self.publish_rate_limited, 1);
    }

    /// A point-in-time copy of every counter, plus the gauges passed in.
    pub fn snapshot(&self, gauges: Gauges) -> Snapshot {
        Snapshot {
            uptime_seconds: self.started.elapsed().as_secs(),
            connections: gauges.connections.open,
            connections_total: gauges.connections.total,
            connections_rejected: gauges.connections.rejected_max
                + gauges.connections.rejected_per_ip,
            events_published: get(&self.published),
            events_delivered: get(&self.deliveries),
            slow_consumer_disconnects: get(&self.slow_disconnects),
            resumes: get(&self.resumes),
            replayed_events: get(&self.replayed),
            resets: get(&self.resets),
            history_evicted: get(&self.history_evicted),
            auth_failures: get(&self.auth_failures),
            source_notifications: get(&self.source_notifications),
            source_skipped: self.source_skipped.iter().map(get).sum(),
            source_outbox_rows: get(&self.source_outbox_rows),
            source_connections: get(&self.source_connections),
            broker_reconnects: get(&self.broker_reconnects),
            broker_caught_up: get(&self.broker_caught_up),
            broker_closed: get(&self.broker_closed),
            client_events: get(&self.client_events),
            client_events_refused: get(&self.client_events_refused),
            webhooks_sent: get(&self.webhooks_sent),
            webhooks_failed: get(&self.webhooks_failed),
            publish_rate_limited: get(&self.publish_rate_limited),
            partitions_followed: get(&self.partitions_followed),
            broker_received_bytes: get(&self.broker_received_bytes),
            channels: gauges.channels,
            history_channels: gauges.history_channels,
            history_bytes: gauges.history_bytes,
            broker: gauges.broker,
            rss_bytes: resident_memory_bytes(),
        }
    }

    /// The Prometheus text exposition of every metric of [`METRICS`].
    pub fn prometheus(&self, gauges: Gauges) -> String {
        let snapshot = self.snapshot(gauges);
        let mut out = String::with_capacity(4096);
        for metric in METRICS {
            let kind = match metric.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let name = metric.name;
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", metric.help);
            match metric.read {
                Read::One(read) => {
                    let _ = writeln!(out, "{name} {}", read(&snapshot));
                }
                Read::ByReason(read) => {
                    for (reason, value) in read(self, &gauges) {
                        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
                    }
                }
                Read::ByPartition => {
                    for (partition, value) in self.received.get().into_iter().flatten().enumerate()
                    {
                        let value = get(value);
                        let _ = writeln!(out, "{name}{{partition=\"{partition}\"}} {value}");
                    }
                }
            }
        }
        out
    }
}

/// Every Prometheus metric of the hub: its name, type, help, and how to read it
/// from a [`Snapshot`] (or, for the counters kept by reason, from the counters).
/// `/metrics` is this table rendered; a metric is added here and nowhere else.
const METRICS: &[Metric] = &[
    Metric {
        name: "herald_connections",
        kind: Kind::Gauge,
        help: "Open streaming connections.",
        read: Read::One(|s| s.connections),
    },
    Metric {
        name: "herald_connections_total",
        kind: Kind::Counter,
        help: "Streaming connections accepted.",
        read: Read::One(|s| s.connections_total),
    },
    Metric {
        name: "herald_connections_rejected_total",
        kind: Kind::Counter,
        help: "Streaming connections refused by a limit.",
        read: Read::ByReason(rejected),
    },
    Metric {
        name: "herald_channels",
        kind: Kind::Gauge,
        help: "Channels with at least one subscriber on this node.",
        read: Read::One(|s| s.channels as u64),
    },
    Metric {
        name: "herald_history_channels",
        kind: Kind::Gauge,
        help: "Channels with history kept by the broker.",
        read: Read::One(|s| s.history_channels as u64),
    },
    Metric {
        name: "herald_history_bytes",
        kind: Kind::Gauge,
        help: "Approximate memory of the history this process keeps (memory and NATS brokers).",
        read: Read::One(|s| s.history_bytes),
    },
    Metric {
        name: "herald_history_evicted_total",
        kind: Kind::Counter,
        help: "Events evicted from history by the memory budget (limits.history_memory).",
        read: Read::One(|s| s.history_evicted),
    },
    Metric {
        name: "herald_events_published_total",
        kind: Kind::Counter,
        help: "Events accepted for publication.",
        read: Read::One(|s| s.events_published),
    },
    Metric {
        name: "herald_publish_rate_limited_total",
        kind: Kind::Counter,
        help: "Publish requests refused by a publisher rate limit (limits.publish_rate, namespaces.*.publish_rate).",
        read: Read::One(|s| s.publish_rate_limited),
    },
    Metric {
        name: "herald_deliveries_total",
        kind: Kind::Counter,
        help: "Events queued to connections.",
        read: Read::One(|s| s.events_delivered),
    },
    Metric {
        name: "herald_slow_consumer_disconnects_total",
        kind: Kind::Counter,
        help: "Connections closed because their queue overflowed.",
        read: Read::One(|s| s.slow_consumer_disconnects),
    },
    Metric {
        name: "herald_resumes_total",
        kind: Kind::Counter,
        help: "Connections that resumed from a last event id.",
        read: Read::One(|s| s.resumes),
    },
    Metric {
        name: "herald_replayed_events_total",
        kind: Kind::Counter,
        help: "Events replayed from history on resume.",
        read: Read::One(|s| s.replayed_events),
    },
    Metric {
        name: "herald_resets_total",
        kind: Kind::Counter,
        help: "Resumes the history could not cover.",
        read: Read::One(|s| s.resets),
    },
    Metric {
        name: "herald_auth_failures_total",
        kind: Kind::Counter,
        help: "Requests whose credential was refused.",
        read: Read::One(|s| s.auth_failures),
    },
    Metric {
        name: "herald_source_notifications_total",
        kind: Kind::Counter,
        help: "Notifications (or outbox rows) an event source received.",
        read: Read::One(|s| s.source_notifications),
    },
    Metric {
        name: "herald_source_skipped_total",
        kind: Kind::Counter,
        help: "Notifications (or routes of one) an event source skipped, by reason.",
        read: Read::ByReason(skipped),
    },
    Metric {
        name: "herald_source_outbox_rows_total",
        kind: Kind::Counter,
        help: "Outbox rows published and recorded as done.",
        read: Read::One(|s| s.source_outbox_rows),
    },
    Metric {
        name: "herald_source_connections_total",
        kind: Kind::Counter,
        help: "Connections an event source made to its service (the first and every reconnection).",
        read: Read::One(|s| s.source_connections),
    },
    Metric {
        name: "herald_broker_reconnects_total",
        kind: Kind::Counter,
        help: "Reconnections of the broker to its service after losing it.",
        read: Read::One(|s| s.broker_reconnects),
    },
    Metric {
        name: "herald_broker_caught_up_events_total",
        kind: Kind::Counter,
        help: "Events this node missed live and delivered from the broker's log instead.",
        read: Read::One(|s| s.broker_caught_up),
    },
    Metric {
        name: "herald_broker_closed_connections_total",
        kind: Kind::Counter,
        help: "Connections closed because this node may have missed events for them.",
        read: Read::One(|s| s.broker_closed),
    },
    Metric {
        name: "herald_broker_received_events_total",
        kind: Kind::Counter,
        help: "Events this node received from the broker, by partition.",
        read: Read::ByPartition,
    },
    Metric {
        name: "herald_broker_received_bytes_total",
        kind: Kind::Counter,
        help: "Bytes of event messages this node read from the broker's service (Redis, NATS).",
        read: Read::One(|s| s.broker_received_bytes),
    },
    Metric {
        name: "herald_broker_partitions_followed",
        kind: Kind::Gauge,
        help: "Partitions whose events this node receives now (partitions followed on demand).",
        read: Read::One(|s| s.partitions_followed),
    },
    Metric {
        name: "herald_client_events_total",
        kind: Kind::Counter,
        help: "Events clients asked to publish.",
        read: Read::One(|s| s.client_events),
    },
    Metric {
        name: "herald_client_events_refused_total",
        kind: Kind::Counter,
        help: "Client events refused (not allowed, rate limit, hook).",
        read: Read::One(|s| s.client_events_refused),
    },
    Metric {
        name: "herald_webhooks_total",
        kind: Kind::Counter,
        help: "Webhook requests sent, retries included.",
        read: Read::One(|s| s.webhooks_sent),
    },
    Metric {
        name: "herald_webhook_failures_total",
        kind: Kind::Counter,
        help: "Webhooks not delivered after their retries.",
        read: Read::One(|s| s.webhooks_failed),
    },
    Metric {
        name: "herald_process_resident_memory_bytes",
        kind: Kind::Gauge,
        help: "Resident memory of the hub process.",
        read: Read::One(|s| s.rss_bytes),
    },
];

/// One metric of [`METRICS`].
struct Metric {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    read: Read,
}

/// A metric's Prometheus type.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// How a metric's value is read.
enum Read {
    /// One value, from the snapshot.
    One(fn(&Snapshot) -> u64),
    /// One value per reason (a bounded set of label values), from the counters.
    ByReason(fn(&Stats, &Gauges) -> Vec<(&'static str, u64)>),
    /// The events received per partition (none with one partition).
    ByPartition,
}

/// Connections refused, by the limit that refused them.
fn rejected(_: &Stats, gauges: &Gauges) -> Vec<(&'static str, u64)> {
    vec![
        ("max_connections", gauges.connections.rejected_max),
        ("per_ip", gauges.connections.rejected_per_ip),
    ]
}

/// Notifications an event source skipped, by reason.
fn skipped(stats: &Stats, _: &Gauges) -> Vec<(&'static str, u64)> {
    SourceSkip::ALL
        .iter()
        .map(|&why| (why.label(), stats.source_skips(why)))
        .collect()
}

/// Values that are read from elsewhere when a snapshot is taken.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// The connection limits' counts.
    pub connections: crate::limits::ConnectionCounts,
    /// Channels with a subscriber on this node.
    pub channels: usize,
    /// Channels with history.
    pub history_channels: usize,
    /// Approximate memory of the history kept in this process, in bytes.
    pub history_bytes: u64,
    /// The broker kind.
    pub broker: &'static str,
}

/// The body of `GET /stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Seconds since the hub started.
    pub uptime_seconds: u64,
    /// Open streaming connections.
    pub connections: u64,
    /// Streaming connections accepted since start.
    pub connections_total: u64,
    /// Streaming connections refused by a limit since start.
    pub connections_rejected: u64,
    /// Events accepted for publication.
    pub events_published: u64,
    /// Events queued to connections.
    pub events_delivered: u64,
    /// Connections closed because their queue overflowed.
    pub slow_consumer_disconnects: u64,
    /// Connections that resumed from a last event id.
    pub resumes: u64,
    /// Events replayed on resume.
    pub replayed_events: u64,
    /// Resumes the history could not cover.
    pub resets: u64,
    /// Events evicted from history by the memory budget.
    pub history_evicted: u64,
    /// Requests whose credential was refused.
    pub auth_failures: u64,
    /// Notifications (or outbox rows) an event source received.
    pub source_notifications: u64,
    /// Notifications (or routes of one) an event source skipped, all reasons together.
    pub source_skipped: u64,
    /// Outbox rows published and recorded as done.
    pub source_outbox_rows: u64,
    /// Connections an event source made to its service.
    pub source_connections: u64,
    /// Reconnections of the broker to its service after losing it.
    pub broker_reconnects: u64,
    /// Events this node missed live and delivered from the broker's log instead.
    pub broker_caught_up: u64,
    /// Connections closed because this node may have missed events for them.
    pub broker_closed: u64,
    /// Events clients asked to publish.
    pub client_events: u64,
    /// Client events refused.
    pub client_events_refused: u64,
    /// Webhook requests sent.
    pub webhooks_sent: u64,
    /// Webhooks not delivered after their retries.
    pub webhooks_failed: u64,
    /// Publish requests refused by a publisher rate limit.
    pub publish_rate_limited: u64,
    /// Partitions whose events this node receives now (with partitions followed on
    /// demand; 0 otherwise).
    pub partitions_followed: u64,
    /// Bytes of event messages this node read from the broker's service (Redis).
    pub broker_received_bytes: u64,
    /// Channels with at least one subscriber on this node.
    pub channels: usize,
    /// Channels with history kept by the broker.
    pub history_channels: usize,
    /// Approximate memory of the history kept in this process, in bytes (0 with
    /// the Redis broker, whose history is in Redis).
    pub history_bytes: u64,
    /// The broker kind.
    pub broker: &'static str,
    /// Resident memory of the process in bytes (0 where it cannot be read).
    pub rss_bytes: u64,
}

/// The resident set size of this process, from `/proc/self/statm` (0 elsewhere).
pub fn resident_memory_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_counter_and_no_channel_labels() {
        let stats = Stats::default();
        stats.count_partitions(2);
        stats.received(1);
        stats.received(1);
        stats.received(5);
        stats.broker_received_bytes(300);
        stats.published(3);
        stats.delivered(7, 1);
        stats.history_evicted(2);
        stats.publish_rate_limited();
        let gauges = Gauges {
            connections: crate::limits::ConnectionCounts {
                open: 1,
                ..Default::default()
            },
            history_bytes: 4096,
            ..Gauges::default()
        };
        let text = stats.prometheus(gauges);
        assert!(text.contains("herald_history_evicted_total 2\n"));
        assert!(text.contains("herald_publish_rate_limited_total 1\n"));
        assert_eq!(stats.snapshot(gauges).publish_rate_limited, 1);
        assert!(text.contains("herald_history_bytes 4096\n"));
        assert_eq!(stats.snapshot(gauges).history_evicted, 2);
        assert!(text.contains("herald_connections 1\n"));
        assert!(text.contains("herald_events_published_total 3\n"));
        assert!(text.contains("herald_deliveries_total 7\n"));
        assert!(text.contains("herald_slow_consumer_disconnects_total 1\n"));
        assert!(text.contains("# TYPE herald_deliveries_total counter\n"));
        assert!(text.contains("herald_broker_received_events_total{partition=\"0\"} 0\n"));
        assert!(text.contains("herald_broker_received_events_total{partition=\"1\"} 2\n"));
        assert!(!text.contains("partition=\"5\""), "no such partition");
        assert!(text.contains("herald_broker_received_bytes_total 300\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.contains("channel="), "{line}");
        }
    }

    #[test]
    fn source_counters_have_bounded_reasons() {
        let stats = Stats::default();
        stats.source_received(4);
        stats.source_skipped(SourceSkip::NotJson);
        stats.source_skipped(SourceSkip::BadChannel);
        stats.source_skipped(SourceSkip::BadChannel);
        stats.source_outbox_done(2);
        stats.source_connected();
        let text = stats.prometheus(Gauges::default());
        assert!(text.contains("herald_source_notifications_total 4\n"));
        assert!(text.contains("herald_source_skipped_total{reason=\"not_json\"} 1\n"));
        assert!(text.contains("herald_source_skipped_total{reason=\"bad_channel\"} 2\n"));
        assert!(text.contains("herald_source_skipped_total{reason=\"missing_field\"} 0\n"));
        assert!(text.contains("herald_source_outbox_rows_total 2\n"));
        assert!(text.contains("herald_source_connections_total 1\n"));
        let snapshot = stats.snapshot(Gauges::default());
        assert_eq!(snapshot.source_skipped, 3);
        assert_eq!(snapshot.source_notifications, 4);
    }
}
