//! `herald-floor`: what this machine allows any hub, measured with no hub at all.
//!
//! A server's latency over many subscribers is bounded by what no server can change:
//! the kernel's cost of a loopback write. `read` (on one core) opens N connections to
//! `writes` (on the other), which then writes one event-sized frame to each socket, a
//! round at a time, in a plain loop, while `read` reads them as a load generator
//! does. A round is the least time a server on one core needs to get one event to N
//! subscribers, so no such server's latency over N subscribers can be below it.
//!
//! Loopback only; every loop is bounded by a count and a deadline.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::io::AsyncReadExt;

#[derive(Debug, Parser)]
#[command(name = "herald-floor")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Accepts `connections` sockets, then writes `bytes` to each, `rounds` times,
    /// and prints the time per write and per round as JSON.
    Writes {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Bytes per write (an SSE frame of a 100-byte event is about 150).
        #[arg(long, default_value_t = 150)]
        bytes: usize,
        /// Pause between rounds, so that each starts with an idle reader.
        #[arg(long, default_value_t = 50)]
        pause_ms: u64,
        /// Seconds to wait for the readers to connect.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Opens `connections` sockets to `writes` and reads until they close.
    Read {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds after which it stops whatever happens.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Writes {
            listen,
            connections,
            rounds,
            bytes,
            pause_ms,
            timeout,
        } => writes(listen, connections, rounds, bytes, pause_ms, timeout),
        Command::Read {
            connect,
            connections,
            timeout,
        } => runtime()?.block_on(read(connect, connections, timeout)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn writes(
    listen: SocketAddr,
    connections: usize,
    rounds: usize,
    bytes: usize,
    pause_ms: u64,
    timeout: u64,
) -> Result<()> {
    rlimit::increase_nofile_limit(connections as u64 + 64)?;
    let listener = std::net::TcpListener::bind(listen)?;
    // The address goes to stderr for the script that starts the readers.
    eprintln!("listening on {}", listener.local_addr()?);
    // Accepted as fast as they come (a sleeping accept loop would let the listen
    // queue fill and the kernel drop handshakes, retried a second later); a watchdog
    // ends the process if the readers never all arrive.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(timeout));
        eprintln!("herald-floor: the readers did not all connect within {timeout} s");
        std::process::exit(1);
    });
    let mut sockets = Vec::with_capacity(connections);
    while sockets.len() < connections {
        let (socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        sockets.push(socket);
    }
    std::thread::sleep(Duration::from_millis(500));
    let frame = vec![b'x'; bytes];
    let mut round_us = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        for socket in &mut sockets {
            socket.write_all(&frame)?;
        }
        round_us.push(started.elapsed().as_secs_f64() * 1e6);
        std::thread::sleep(Duration::from_millis(pause_ms));
    }
    round_us.sort_by(f64::total_cmp);
    let median = round_us[round_us.len() / 2];
    let report = serde_json::json!({
        "connections": connections,
        "rounds": rounds,
        "bytes": bytes,
        "round_ms_median": median / 1e3,
        "round_ms_min": round_us[0] / 1e3,
        "round_ms_max": round_us[round_us.len() - 1] / 1e3,
        "write_us_median": median / connections as f64,
    });
    println!("{report}");
    Ok(())
}

async fn read(connect: SocketAddr, connections: usize, timeout: u64) -> Result<()> {
    rlimit::increase_nofile_limit(connections as u64 + 64)?;
    let until = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let mut socket = tokio::net::TcpStream::connect(connect)
            .await
            .with_context(|| format!("connecting to {connect}"))?;
        readers.spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
    while tokio::time::timeout_at(until, readers.join_next())
        .await
        .is_ok_and(|next| next.is_some())
    {}
    Ok(())
}
