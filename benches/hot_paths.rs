//! Micro-benchmarks of the hub's hot paths, so that a regression shows here before
//! a load test: encoding an event's SSE frame, fanning an event out to many
//! subscriber queues, and finding the events to replay for a resume.
//!
//! Run with `cargo bench --bench hot_paths`; `cargo bench --bench hot_paths -- fanout`
//! runs one group.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald::core::history::merge;
use herald::core::{
    ChannelLog, ChannelName, Event, Fanout, FrameFormat, HistoryPolicy, Item, NewEvent, Payload,
};
use herald::http::sse::encode_event;

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).expect("a valid channel name")
}

/// A 100-byte JSON payload like the load generator's.
fn payload() -> Payload {
    let text = format!(
        r#"{{"t":1764480000000000,"s":42,"p":"{}"}}"#,
        "x".repeat(56)
    );
    Payload::json_text(&text).expect("valid JSON")
}

fn event(seq: u64, channels: &[ChannelName]) -> Arc<Event> {
    let mut new = NewEvent::new(channels[0].clone(), payload());
    new.channels = channels.to_vec();
    Arc::new(Event::accept(
        new,
        seq,
        format!("0f3a9c2e-{seq}"),
        SystemTime::now(),
    ))
}

fn frame_encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    let one = event(7, &[channel("orders")]);
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_raw", |b| {
        b.iter(|| encode_event(black_box(&one), FrameFormat::SseRaw, 0))
    });
    group.bench_function("encode_envelope", |b| {
        b.iter(|| encode_event(black_box(&one), FrameFormat::SseEnvelope, 0))
    });
    // What every connection after the first pays: the frame cached in the event.
    one.frame(FrameFormat::SseRaw, 0, |e| {
        encode_event(e, FrameFormat::SseRaw, 0)
    });
    group.bench_function("cached", |b| {
        b.iter(|| {
            black_box(&one).frame(FrameFormat::SseRaw, 0, |e| {
                encode_event(e, FrameFormat::SseRaw, 0)
            })
        })
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();
    for n in [100usize, 1_000, 10_000] {
        let hub = Fanout::new();
        let orders = channel("orders");
        let mut subs: Vec<_> = (0..n as u64)
            .map(|id| hub.register(id, vec![orders.clone(), ChannelName::broadcast()], 64))
            .collect();
        let mut seq = 0;
        group.throughput(Throughput::Elements(n as u64));
        // One event into every queue, then every connection takes it, as the
        // connections' writers do.
        group.bench_with_input(BenchmarkId::new("deliver_and_take", n), &n, |b, _| {
            b.iter_batched(
                || {
                    seq += 1;
                    event(seq, std::slice::from_ref(&orders))
                },
                |e| {
                    let done = hub.deliver(&e);
                    for sub in &mut subs {
                        match sub.try_next() {
                            Ok(Some(Item::Event(e))) => {
                                black_box(e);
                            }
                            other => panic!("expected an event, got {other:?}"),
                        }
                    }
                    done
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn history(c: &mut Criterion) {
    let mut group = c.benchmark_group("history");
    let policy = HistoryPolicy {
        size: 1_000,
        ttl: Duration::from_secs(3600),
    };
    let now = SystemTime::now();
    let names = [channel("a"), channel("b"), channel("c")];
    let mut logs: Vec<ChannelLog> = (0..3).map(|_| ChannelLog::default()).collect();
    for seq in 1..=3_000u64 {
        let i = (seq % 3) as usize;
        logs[i].append(event(seq, &names[i..=i]), &policy, now);
    }
    // A client that missed the last 10 or 100 events of each channel.
    for missed in [10u64, 100] {
        let after = 3_000 - missed * 3;
        group.throughput(Throughput::Elements(missed * 3));
        group.bench_with_input(
            BenchmarkId::new("resume_3_channels", missed),
            &after,
            |b, &after| {
                b.iter(|| {
                    let runs = logs
                        .iter()
                        .map(|log| match log.since(black_box(after)) {
                            Ok(events) => events.cloned().collect(),
                            Err(_) => Vec::new(),
                        })
                        .collect();
                    merge(runs)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, frame_encoding, fanout, history);
criterion_main!(benches);
