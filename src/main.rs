//! The `herald` command: run the hub, publish from a shell, mint development
//! tokens, check a configuration.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use herald::auth::Claims;
use herald::config::Secrets;
use herald::core::ChannelPattern;
use herald::{Config, ConfigError, Node};

/// Exit status for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// Open files kept back from `limits.max_connections` for the listener, logs, and
/// the hub's own connections to brokers, databases and webhooks.
const FILES_RESERVED: u64 = 64;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "A realtime push hub: Server-Sent Events with per-channel auth, history and resume."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve(ServeArgs),
    /// Publish an event to a running hub.
    Publish(PublishArgs),
    /// Print a JWT signed with the configured HS256 secret (for development).
    Token(TokenArgs),
    /// Check a configuration and print what it resolves to.
    CheckConfig(ConfigArgs),
    /// PostgreSQL helpers: the trigger that sends a table's changes to the hub.
    Pg(PgArgs),
}

#[derive(Args)]
struct PgArgs {
    #[command(subcommand)]
    command: PgCommand,
}

#[derive(Subcommand)]
enum PgCommand {
    /// Print the SQL of an AFTER INSERT/UPDATE/DELETE trigger that sends each changed
    /// row as JSON (`op`, `table`, `new`, `old`), or install it with --apply.
    Trigger(PgTriggerArgs),
}

#[derive(Args)]
struct PgTriggerArgs {
    /// The table, optionally with its schema: `tasks`, `app.tasks` (names as written).
    #[arg(long)]
    table: String,
    /// The NOTIFY channel the hub's routes take (with --outbox: the row's topic).
    #[arg(long)]
    notify: String,
    /// The columns to send, comma-separated; every column when left out. Leave
    /// private columns out: they never leave the database.
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    columns: Vec<String>,
    /// The key sent in place of a row too big to notify (8,000 bytes); default: the
    /// primary key with --apply, `id` otherwise.
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    key: Vec<String>,
    /// Columns also sent with the key of a row too big to notify, so routes that
    /// use them (e.g. `team_id`) still work.
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    keep: Vec<String>,
    /// Write each change to the outbox table instead of NOTIFY (lossless mode).
    #[arg(long)]
    outbox: bool,
    /// The outbox table [default: postgres.outbox.table of --config, or herald_outbox].
    #[arg(long, requires = "outbox")]
    outbox_table: Option<String>,
    /// The NOTIFY channel that wakes the hub on new outbox rows [default:
    /// postgres.outbox.notify of --config, or herald_outbox].
    #[arg(long, requires = "outbox")]
    wake: Option<String>,
    /// Remove the trigger and its function instead.
    #[arg(long)]
    drop: bool,
    /// Run the SQL on the database (checking the table and columns first) instead of
    /// only printing it.
    #[arg(long)]
    apply: bool,
    /// The database for --apply [default: postgres.url of --config].
    #[arg(long, env = "HERALD_POSTGRES__URL", hide_env_values = true)]
    url: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct ConfigArgs {
    /// A TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The address to listen on (overrides the file and HERALD_LISTEN).
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The user (`sub` claim); they may subscribe to `user:{sub}`.
    #[arg(long)]
    sub: Option<String>,
    /// A channel pattern the token may subscribe to (repeatable): `name`, `prefix:*`, `*`.
    #[arg(long = "subscribe", value_name = "PATTERN")]
    subscribe: Vec<String>,
    /// A channel pattern the token may publish to (repeatable).
    #[arg(long = "publish", value_name = "PATTERN")]
    publish: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

#[derive(Args)]
struct PublishArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The hub's base URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A target channel (repeatable).
    #[arg(long = "channel", short = 'c', required_unless_present = "broadcast")]
    channels: Vec<String>,
    /// Send to every connection instead of channels.
    #[arg(long, conflicts_with = "channels")]
    broadcast: bool,
    /// The event type.
    #[arg(long = "type", short = 't')]
    kind: Option<String>,
    /// An id of your own for the event.
    #[arg(long)]
    id: Option<String>,
    /// Send the data as text even if it parses as JSON.
    #[arg(long)]
    text: bool,
    /// A publisher token or API key; without one, a short-lived token is minted with
    /// the configured secret.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The data: JSON or text; `-` reads standard input.
    data: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Publish(args) => publish(args),
        Command::Token(args) => token(args),
        Command::CheckConfig(args) => check_config(args),
        Command::Pg(args) => match args.command {
            PgCommand::Trigger(args) => pg_trigger(args),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(config) = e.downcast_ref::<ConfigError>() {
                eprintln!("herald: {config}");
                ExitCode::from(EXIT_CONFIG)
            } else {
                // A driver's error may quote a connection URL (`pg trigger --url`).
                eprintln!("herald: {}", herald::config::redact_url(&format!("{e:#}")));
                ExitCode::FAILURE
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
        config.validate()?;
    }
    let mut dev_secret = None;
    if config.auth.jwt_secret.is_none()
        && config.auth.jwt_public_key.is_none()
        && config.auth.jwks.is_none()
        && config.auth.api_keys.is_empty()
    {
        let secret: String = (0..40)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random_range(0..36)]))
            .collect();
        config.auth.jwt_secret = Some(secret.clone());
        config.demo.tokens.get_or_insert(true);
        dev_secret = Some(secret);
    }
    let mut secrets = config.secrets();
    if let Some(secret) = &dev_secret {
        secrets.add(secret);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(MaskedStderr(Arc::new(secrets)))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let capped = raise_file_limit(&mut config);
    let addr = config.listen_addr()?;
    let ops_addr = config.ops.listen_addr()?;
    runtime()?.block_on(async move {
        let listener = listen(addr)
            .with_context(|| format!("cannot listen on {addr} (configuration key `listen`)"))?;
        let local = listener.local_addr()?;
        let ops_listener = ops_addr
            .map(|addr| {
                listen(addr).with_context(|| {
                    format!("cannot listen on {addr} (configuration key `ops.listen`)")
                })
            })
            .transpose()?;
        let node = Node::new(config)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "herald {} listening on http://{local}", env!("CARGO_PKG_VERSION"))?;
        let ops = match ops_listener {
            Some(ops_listener) => {
                writeln!(
                    out,
                    "ops on http://{} (/stats, /metrics, /healthz, /readyz)",
                    ops_listener.local_addr()?
                )?;
                Some(tokio::spawn(herald::serve_ops(ops_listener, node.clone())))
            }
            None => None,
        };
        if let Some(notice) = &capped {
            writeln!(out, "warning: {notice}")?;
            tracing::warn!("{notice}");
        }
        if node.config().demo.enabled {
            writeln!(out, "demo app: http://{local}/")?;
        }
        if let Some(secret) = dev_secret {
            writeln!(
                out,
                "no credentials configured: using a development secret for this run only\n  export HERALD_JWT_SECRET={secret}\n  herald token --sub alice --subscribe '*' --publish '*'"
            )?;
        }
        out.flush()?;
        drop(out);
        let signals = node.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: closing streams, draining connections");
            signals.shutdown();
            wait_for_signal().await;
            tracing::warn!("second signal: exiting now");
            std::process::exit(1);
        });
        herald::serve(listener, node).await?;
        if let Some(ops) = ops {
            ops.await.context("the ops listener")??;
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Standard error for log lines, with the configuration's secrets and any URL
/// credentials masked: the hub's own lines hide them already, but a library's debug
/// line may print a connection's settings its own way.
#[derive(Clone)]
struct MaskedStderr(Arc<Secrets>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MaskedStderr {
    type Writer = MaskedLine;

    fn make_writer(&'a self) -> MaskedLine {
        MaskedLine(self.0.clone())
    }
}

/// One log line being written; see [`MaskedStderr`].
struct MaskedLine(Arc<Secrets>);

impl Write for MaskedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over each line whole, so a secret is never split.
        let line = self.0.hide(&String::from_utf8_lossy(buf));
        std::io::stderr().lock().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Connections the kernel may hold for the hub to accept (capped by
/// `net.core.somaxconn`). A burst of clients connecting or reconnecting at once must
/// not find the queue full: a dropped handshake is retried only after a second.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with a backlog of [`LISTEN_BACKLOG`].
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Raises the open-file limit as far as allowed. When the limit still caps
/// `limits.max_connections` (each connection is a file descriptor), lowers it and
/// returns the notice to print at start.
fn raise_file_limit(config: &mut Config) -> Option<String> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
    let limit = if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    // Leave room for the listener, logs, broker and database connections.
    let usable = (limit.saturating_sub(FILES_RESERVED) as usize).max(1);
    let wanted = config.limits.max_connections;
    if wanted <= usable {
        return None;
    }
    config.limits.max_connections = usable;
    Some(format!(
        "limits.max_connections lowered from {wanted} to {usable}: the open-file limit of this \
         process is {limit} (hard limit {hard}) and every connection needs one; raise the hard \
         limit (ulimit -Hn, LimitNOFILE= in a systemd unit) to serve more"
    ))
}

fn patterns(raw: &[String]) -> anyhow::Result<Vec<ChannelPattern>> {
    raw.iter()
        .map(|p| ChannelPattern::parse(p).with_context(|| format!("invalid pattern {p:?}")))
        .collect()
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.config.as_deref())?;
    if config.auth.jwt_secret.is_none() {
        return Err(ConfigError::new(
            "auth.jwt_secret",
            "is not set: `herald token` signs with the HS256 secret (set HERALD_JWT_SECRET)",
        )
        .into());
    }
    let auth = herald::auth::Authenticator::from_config(&config.auth)?;
    let mut claims = Claims::new(args.sub, Duration::from_secs(args.ttl));
    claims.herald.subscribe = patterns(&args.subscribe)?;
    claims.herald.publish = patterns(&args.publish)?;
    println!("{}", auth.mint(&claims)?);
    Ok(())
}

fn check_config(args: ConfigArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    herald::auth::Authenticator::from_config(&config.auth)?;
    // All of the output is TOML, so it can be saved and given back with --config.
    println!("# The configuration is valid. It resolves to:\n");
    print!("{}", config.redacted()?.to_toml()?);
    Ok(())
}

fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let raw = if args.data == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the data from standard input")?;
        s
    } else {
        args.data.clone()
    };
    let data: serde_json::Value = if args.text {
        serde_json::Value::String(raw)
    } else {
        serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw))
    };
    let mut body = serde_json::json!({ "data": data });
    if args.broadcast {
        body["broadcast"] = true.into();
    } else if let [one] = args.channels.as_slice() {
        body["channel"] = one.clone().into();
    } else {
        body["channels"] = args.channels.clone().into();
    }
    if let Some(kind) = &args.kind {
        body["type"] = kind.clone().into();
    }
    if let Some(id) = &args.id {
        body["id"] = id.clone().into();
    }
    let token = match args.token {
        Some(token) => token,
        None => {
            let config = Config::load(args.config.config.as_deref())?;
            let auth = herald::auth::Authenticator::from_config(&config.auth)?;
            let mut claims = Claims::new(Some("herald-cli".into()), Duration::from_secs(60));
            claims.herald.publish = if args.broadcast {
                vec![ChannelPattern::parse("$broadcast")?]
            } else {
                patterns(&args.channels)?
            };
            auth.mint(&claims)
                .context("no --token given (or HERALD_TOKEN) and no secret to mint one")?
        }
    };
    let (status, answer) =
        runtime()?.block_on(post(&args.url, "/publish", &token, body.to_string()))?;
    if (200..300).contains(&status) {
        println!("{answer}");
        Ok(())
    } else {
        bail!("the hub answered {status}: {answer}")
    }
}

/// POSTs JSON to a plain-HTTP hub.
async fn post(base: &str, path: &str, token: &str, body: String) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt;
    let base: hyper::Uri = base
        .parse()
        .with_context(|| format!("invalid --url {base:?}"))?;
    if base.scheme_str() != Some("http") {
        bail!("--url must be an http:// address (use curl for https)");
    }
    let host = base.host().context("--url has no host")?.to_owned();
    let port = base.port_u16().unwrap_or(80);
    let prefix = base.path().trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post(format!("{prefix}{path}"))
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn pg_trigger(args: PgTriggerArgs) -> anyhow::Result<()> {
    use herald::source::postgres::trigger::{Delivery, QualifiedName, TriggerSpec};
    let configured = match &args.config.config {
        Some(path) => Config::load(Some(path))?.postgres,
        None => None,
    };
    let table = QualifiedName::parse(&args.table).map_err(|m| anyhow::anyhow!("--table: {m}"))?;
    let delivery = if args.outbox {
        let defaults = configured
            .as_ref()
            .map(|c| c.outbox.clone())
            .unwrap_or_default();
        let outbox = args.outbox_table.unwrap_or(defaults.table);
        Delivery::Outbox {
            table: QualifiedName::parse(&outbox)
                .map_err(|m| anyhow::anyhow!("--outbox-table: {m}"))?,
            wake: args.wake.unwrap_or(defaults.notify),
        }
    } else {
        Delivery::Notify
    };
    let list = |v: Vec<String>| (!v.is_empty()).then_some(v);
    let spec = TriggerSpec {
        table,
        notify: args.notify,
        columns: list(args.columns),
        key: list(args.key),
        keep: args.keep,
        delivery,
    };
    spec.check()?;
    if !args.apply {
        print!(
            "{}",
            if args.drop {
                spec.drop_sql()
            } else {
                spec.install_sql()
            }
        );
        return Ok(());
    }
    let url = args
        .url
        .or_else(|| configured.map(|c| c.url))
        .filter(|u| !u.is_empty())
        .context(
            "--apply needs the database: --url, HERALD_POSTGRES__URL, or postgres.url in --config",
        )?;
    let sql = runtime()?.block_on(spec.apply(&url, args.drop))?;
    print!("{sql}");
    eprintln!(
        "herald: {} on {}",
        if args.drop {
            "removed the trigger"
        } else {
            "installed the trigger"
        },
        args.table
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
