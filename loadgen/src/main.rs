//! `herald-loadgen`: a bounded, single-run load generator for the Herald
//! push hub (and, through path templates, other SSE servers such as Nchan).
//!
//! It opens many Server-Sent Events subscribers over a set of channels,
//! publishes timestamped events through the HTTP publish endpoint, and
//! reports connection rate, publish rate, delivery rate, publish-to-receive
//! latency percentiles, lost and duplicate deliveries, and the hub's memory
//! per connection. It only talks plain HTTP to loopback addresses.

mod http;
mod pg;
mod publish;
mod report;
mod run;
mod sse;
mod stats;
mod subscriber;
mod target;
mod ws;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::publish::PublishFormat;
use crate::run::RunConfig;
use crate::subscriber::ReadyOn;
use crate::target::{Channel, PathTemplate, Target, local_port_range, parse_source_ips};
use crate::ws::Transport;

/// Load generator for the Herald push hub: SSE subscribers, timestamped
/// publishes, and a report of throughput, latency, loss and hub memory.
///
/// Example: herald-loadgen --url http://127.0.0.1:8080 --token "$TOKEN"
/// --connections 10000 --channels 100 --events 100000 --rate 20000 --json
#[derive(Debug, Parser)]
#[command(name = "herald-loadgen", version)]
struct Args {
    /// Hub base URL (plain http, loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,

    /// Several hub base URLs, comma separated; subscribers and publishers
    /// are spread over them round-robin. Overrides --url.
    #[arg(long, value_delimiter = ',')]
    urls: Vec<String>,

    /// JWT used as `token=` on subscribe and as the Bearer token on
    /// publish (e.g. from `herald token --sub bench --subscribe '*' --publish '*'`).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// How subscribers connect: Server-Sent Events, or WebSocket (`/ws`,
    /// Herald's JSON frames; publishing stays on HTTP).
    #[arg(long, value_enum, default_value_t = Transport::Sse)]
    transport: Transport,

    /// Number of subscriber connections.
    #[arg(short = 'n', long, default_value_t = 100)]
    connections: usize,

    /// Number of channels; connection k subscribes to channel k % channels.
    #[arg(short = 'm', long, default_value_t = 10)]
    channels: usize,

    /// One channel per connection (channels = connections).
    #[arg(long)]
    channel_per_connection: bool,

    /// Channel name prefix; channel i is `{prefix}{i}`.
    #[arg(long, default_value = "bench-")]
    channel_prefix: String,

    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,

    /// Seconds a subscriber may take from connect to ready.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,

    /// Local loopback addresses to bind subscriber sockets to, round-robin,
    /// to get past the ~28k ephemeral ports of one address: a list and/or
    /// ranges, e.g. `127.0.0.2,127.0.0.3` or `127.0.0.2-127.0.0.9`.
    #[arg(long)]
    source_ips: Option<String>,

    /// When a subscriber counts as ready: on Herald's `connected` event, or
    /// on the 200 response head (for servers without such an event).
    #[arg(long, value_enum, default_value_t = ReadyOn::Connected)]
    ready_on: ReadyOn,

    /// Events per second in total; 0 = as fast as the publishers can go.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,

    /// Concurrent publisher tasks, each with one pipelined keep-alive
    /// connection (at most one per channel).
    #[arg(long, default_value_t = 4)]
    publishers: usize,

    /// Requests in flight per publisher connection (HTTP/1.1 pipelining).
    #[arg(long, default_value_t = 16)]
    pipeline: usize,

    /// Events per publish request (sent as a JSON array when > 1; Herald
    /// format only). With --rate, a batch takes only events already due.
    #[arg(long, default_value_t = 1)]
    batch: usize,

    /// Total events to publish; event i goes to channel i % channels.
    #[arg(long, default_value_t = 10_000)]
    events: u64,

    /// Size in bytes of each event's data object (minimum about 40).
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,

    /// Publish exactly one event to each channel (overrides --events).
    #[arg(long)]
    each_channel_once: bool,

    /// Cap in seconds on the publishing phase.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,

    /// Seconds to wait after publishing for outstanding deliveries.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,

    /// Cap in seconds on the whole run.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,

    /// Idle mode: open the connections, publish nothing, and measure the
    /// hub's memory per connection.
    #[arg(long)]
    idle: bool,

    /// Seconds to keep the connections open in idle mode before measuring.
    #[arg(long, default_value_t = 5.0)]
    idle_secs: f64,

    /// Hub process id: read its RSS from /proc/<pid>/status instead of the
    /// `rss_bytes` of each node's stats endpoint.
    #[arg(long)]
    hub_pid: Option<u32>,

    /// Path of the hub's stats endpoint (JSON with `rss_bytes`, `connections`).
    #[arg(long, default_value = "/stats")]
    stats_path: String,

    /// Subscribe path; `{channel}` is replaced by the channel name and
    /// `token=` is appended when a token is given. Default:
    /// `/events?channel={channel}`, or `/ws?channel={channel}` with
    /// `--transport ws`.
    #[arg(long)]
    subscribe_path: Option<String>,

    /// Publish path; may contain `{channel}` (needed with --publish-format raw).
    #[arg(long, default_value = "/publish")]
    publish_path: String,

    /// Publish body: Herald's `{"channel":..,"data":..}`, or the raw data
    /// object POSTed to a per-channel --publish-path.
    #[arg(long, value_enum, default_value_t = PublishFormat::Herald)]
    publish_format: PublishFormat,

    /// Publish by inserting rows into a PostgreSQL table (loopback only)
    /// instead of POSTing to the hub: the table's trigger and the hub's
    /// PostgreSQL source deliver them, and latency runs from INSERT to SSE.
    /// Rows per statement: --batch; connections: --publishers.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,

    /// The table --postgres-url inserts into (columns `channel text, t bigint,
    /// s bigint, p text`).
    #[arg(long, default_value = "herald_bench", requires = "postgres_url")]
    postgres_table: String,

    /// Print one JSON object on stdout (the human summary goes to stderr).
    #[arg(long)]
    json: bool,

    /// No progress lines on stderr.
    #[arg(short, long)]
    quiet: bool,

    /// Worker threads (default: number of CPU cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || !(0.0..=1e7).contains(&v) {
        bail!("--{name} must be a number of seconds between 0 and 10^7, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Raises the open-file soft limit to the hard limit and checks that the
/// run fits. Returns the limit.
fn raise_nofile(needed: u64) -> Result<u64> {
    let soft = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-file limit")?;
    let (_, hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).context("reading the open-file limit")?;
    if needed > soft {
        bail!(
            "this run needs about {needed} open files (one per connection plus a margin) but the \
             limit is {soft} (hard limit {hard}); raise the hard limit (ulimit -Hn, LimitNOFILE= \
             in a systemd unit, or limits.conf) or use fewer --connections"
        );
    }
    Ok(soft)
}

fn build_config(args: Args, threads: usize) -> Result<RunConfig> {
    let urls = if args.urls.is_empty() {
        vec![args.url.clone()]
    } else {
        args.urls.clone()
    };
    let targets = urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<Vec<_>>>()?;
    let source_ips = match &args.source_ips {
        Some(spec) => parse_source_ips(spec)?,
        None => Vec::new(),
    };
    if let Some(ip) = source_ips
        .iter()
        .find(|ip| targets.iter().any(|t| t.addr.is_ipv4() != ip.is_ipv4()))
    {
        bail!("source address {ip} and the hub address are of different IP families");
    }
    let mut notes = Vec::new();
    let channel_count = if args.channel_per_connection {
        args.connections.max(1)
    } else {
        args.channels
    };
    if channel_count == 0 {
        bail!("--channels must be at least 1");
    }
    if channel_count > 10_000_000 {
        bail!("--channels is too large");
    }
    for (name, v) in [
        ("connect-concurrency", args.connect_concurrency),
        ("publishers", args.publishers),
        ("pipeline", args.pipeline),
        ("batch", args.batch),
    ] {
        if v == 0 {
            bail!("--{name} must be at least 1");
        }
    }
    if !args.rate.is_finite() || args.rate < 0.0 {
        bail!("--rate must be 0 or a positive number");
    }
    if args.payload_bytes > 16 * 1024 * 1024 {
        bail!("--payload-bytes is too large (max 16 MiB)");
    }
    let publish_format = args.publish_format;
    let publish_path = PathTemplate::new(&args.publish_path)?;
    if publish_format == PublishFormat::Raw {
        if args.batch > 1 {
            bail!("--batch needs --publish-format herald");
        }
        if !publish_path.has_channel() {
            bail!(
                "--publish-format raw needs {{channel}} in --publish-path, e.g. '/pub?id={{channel}}'"
            );
        }
    }
    let postgres = match &args.postgres_url {
        Some(url) => {
            notes.push(format!(
                "publishing by INSERT into {} through PostgreSQL",
                args.postgres_table
            ));
            Some(pg::PgTarget::parse(url, &args.postgres_table)?)
        }
        None => None,
    };
    let subscribe_path = PathTemplate::new(
        args.subscribe_path
            .as_deref()
            .unwrap_or(args.transport.default_path()),
    )?;
    if !subscribe_path.has_channel() {
        notes.push(
            "--subscribe-path has no {channel}: every connection subscribes to the same path"
                .into(),
        );
    }
    if !args.stats_path.starts_with('/') {
        bail!("--stats-path must start with '/'");
    }
    let events = if args.each_channel_once {
        if args.events != channel_count as u64 {
            notes.push(format!(
                "--each-channel-once: publishing {channel_count} events (one per channel)"
            ));
        }
        channel_count as u64
    } else {
        args.events
    };
    if args.token.is_none() {
        notes.push("no --token given: requests carry no credentials".into());
    }
    if args.payload_bytes < 40 {
        notes
            .push("--payload-bytes below ~40: events carry the timestamp and sequence only".into());
    }
    if let Some(range) = local_port_range() {
        let spread = if source_ips.is_empty() {
            targets.len()
        } else {
            source_ips.len()
        };
        let capacity = u64::from(range) * spread as u64;
        if args.connections as u64 > capacity {
            let msg = format!(
                "{} connections may exceed the ~{capacity} local ports available ({range} per \
                 source address); use --source-ips 127.0.0.2-127.0.0.N to spread them",
                args.connections
            );
            eprintln!("warning: {msg}");
            notes.push(msg);
        }
    }
    let channels = (0..channel_count)
        .map(|i| Channel::new(&args.channel_prefix, i))
        .collect();
    Ok(RunConfig {
        targets,
        token: args.token,
        connections: args.connections,
        channels,
        connect_concurrency: args.connect_concurrency,
        connect_timeout: secs("connect-timeout", args.connect_timeout)?,
        source_ips,
        ready_on: args.ready_on,
        transport: args.transport,
        subscribe_path,
        publish_path,
        publish_format,
        rate: args.rate,
        publishers: args.publishers,
        pipeline: args.pipeline,
        batch: args.batch,
        events,
        payload_bytes: args.payload_bytes,
        duration: secs("duration", args.duration)?,
        drain_timeout: secs("drain-timeout", args.drain_timeout)?,
        timeout: secs("timeout", args.timeout)?,
        idle: args.idle,
        idle_secs: secs("idle-secs", args.idle_secs)?,
        hub_pid: args.hub_pid,
        stats_path: args.stats_path,
        shards: (threads * 4).max(8),
        postgres,
        progress: !args.quiet,
        notes,
    })
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let json = args.json;
    let needed = args.connections as u64 + args.publishers as u64 + 64;
    raise_nofile(needed)?;
    let cfg = build_config(args, threads)?;
    let hard_cap = cfg.timeout + Duration::from_secs(30);
    // One thread runs everything on itself; with more, the run is a task of the
    // workers rather than of the main thread, so that no connection's work is
    // handed between threads.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    }
    .enable_all()
    .build()
    .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let run = tokio::spawn(tokio::time::timeout(hard_cap, run::run(cfg)));
        run.await.context("the run stopped")
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    let report = result
        .map_err(|_| anyhow::anyhow!("the run did not stop within --timeout plus 30 s"))??;
    if json {
        eprint!("{}", report.human());
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunConfig> {
        let mut all = vec!["herald-loadgen"];
        all.extend_from_slice(args);
        build_config(Args::try_parse_from(all)?, 2)
    }

    #[test]
    fn defaults() -> Result<()> {
        let cfg = parse(&["--token", "t"])?;
        assert_eq!(cfg.connections, 100);
        assert_eq!(cfg.channels.len(), 10);
        assert_eq!(cfg.targets[0].addr, "127.0.0.1:8080".parse()?);
        assert_eq!(cfg.events, 10_000);
        assert_eq!(cfg.publish_format, PublishFormat::Herald);
        assert!(cfg.notes.is_empty(), "{:?}", cfg.notes);
        assert_eq!(cfg.transport, Transport::Sse);
        assert_eq!(
            cfg.subscribe_path.render_with_token("", "c", None),
            "/events?channel=c"
        );
        let cfg = parse(&["--transport", "ws"])?;
        assert_eq!(
            cfg.subscribe_path.render_with_token("", "c", None),
            "/ws?channel=c"
        );
        Ok(())
    }

    #[test]
    fn options_combine() -> Result<()> {
        let cfg = parse(&[
            "--urls",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "-n",
            "50",
            "--channel-per-connection",
            "--each-channel-once",
            "--source-ips",
            "127.0.0.2-127.0.0.4",
        ])?;
        assert_eq!(cfg.targets.len(), 2);
        assert_eq!(cfg.channels.len(), 50);
        assert_eq!(cfg.events, 50);
        assert_eq!(cfg.source_ips.len(), 3);
        Ok(())
    }

    #[test]
    fn refusals() {
        assert!(parse(&["--url", "http://10.1.2.3:8080"]).is_err());
        assert!(parse(&["--channels", "0"]).is_err());
        assert!(parse(&["--publish-format", "raw"]).is_err());
        assert!(
            parse(&[
                "--publish-format",
                "raw",
                "--publish-path",
                "/pub?id={channel}",
                "--batch",
                "2"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--publish-format",
                "raw",
                "--publish-path",
                "/pub?id={channel}"
            ])
            .is_ok()
        );
        assert!(parse(&["--duration", "-1"]).is_err());
        assert!(parse(&["--rate", "NaN"]).is_err());
        assert!(parse(&["--source-ips", "::1"]).is_err());
        assert!(parse(&["--postgres-url", "postgres://u@10.1.2.3/db"]).is_err());
        assert!(parse(&["--postgres-table", "t"]).is_err());
        let cfg = parse(&[
            "--postgres-url",
            "postgres://postgres@127.0.0.1:5432/test",
            "--postgres-table",
            "bench.rows",
        ])
        .unwrap();
        assert_eq!(cfg.postgres.map(|p| p.table).as_deref(), Some("bench.rows"));
    }
}
