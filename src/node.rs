//! The composition root: one Herald node, built from its configuration.
//!
//! [`Node::new`] is the one place that knows every part. It reads the checked
//! configuration once, builds the broker (on the system [`Clock`], or the one
//! [`Node::with_clock`] is given), the [`Hub`] over it, the store and the
//! [`Inbox`], the [`Hooks`], presence sharing and the webhooks, starts the event
//! sources, and hands each part the narrow handles it needs. Nothing below it
//! reaches back up.

use std::sync::Arc;

use axum::Router;

use crate::auth::Authenticator;
use crate::broker::LocalDelivery;
use crate::config::{BrokerKind, Config, ConfigError, Settings};
use crate::core::{ChannelName, Clock, Fanout, Member};
use crate::health::Components;
use crate::hooks::Hooks;
use crate::http::{HttpSettings, Services};
use crate::hub::{Hub, HubSettings};
use crate::inbox::Inbox;
use crate::presence::{Roster, SyncSettings};
use crate::session::{SessionParts, SessionSettings, Sessions};
use crate::source::Sink;
use crate::stats::{Snapshot, Stats};
use crate::webhooks::Webhooks;

/// A running node: the handle an application or the binary holds. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// Its name, broker and configuration (whose Debug form hides every secret).
impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services = &self.inner.services;
        f.debug_struct("Node")
            .field("node", &services.hub.node())
            .field("broker", &services.hub.broker_kind())
            .field("config", &self.inner.config)
            .finish()
    }
}

struct Inner {
    services: Services,
    hooks: Hooks,
    roster: Roster,
    config: Config,
}

impl Node {
    /// Builds a node from a configuration, checking it first. Must be called inside
    /// a Tokio runtime: the node's background tasks start here.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::with_clock(config, Clock::system())
    }

    /// [`Node::new`] with history aged by `clock` instead of the system clock: a
    /// [`crate::core::ManualClock`] lets a test expire history without waiting.
    pub fn with_clock(mut config: Config, clock: Clock) -> Result<Self, ConfigError> {
        for key in config.disarm_placeholders() {
            tracing::warn!(
                "{key} holds the placeholder `herald check-config` prints for a hidden \
                 secret; using a random secret known to no one until the real one is set"
            );
        }
        let Settings {
            broker: broker_settings,
            policies,
            redis_source_url,
            publish_rates,
            config,
            ..
        } = config.resolve()?;
        let auth = Arc::new(Authenticator::from_config(&config.auth)?);
        let policies = Arc::new(policies);
        let stats = Arc::new(Stats::default());
        let fanout = Fanout::new();
        let delivery = LocalDelivery::new(fanout.clone(), stats.clone());
        let broker = crate::broker::start(&broker_settings, policies.clone(), delivery, clock)?;
        let name = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let limits = &config.limits;
        let hub = Hub::new(
            HubSettings {
                events: limits.events(),
                queue_size: limits.queue_size,
                max_connections: limits.max_connections,
                max_connections_per_ip: limits.max_connections_per_ip,
            },
            broker,
            fanout,
            stats.clone(),
            name.clone(),
        );

        let components = Components::default();
        let store = crate::store::Store::open(&config.store.backend()?)?;
        crate::inbox::spawn_upkeep(
            store.clone(),
            config.store.cleanup_interval,
            config.store.retention(),
            components.register("store"),
            hub.shutdown_token(),
        );
        let inbox = Inbox::new(store, hub.clone());

        let hooks = Hooks::start();
        let single = matches!(broker_settings.kind, BrokerKind::Memory);
        let roster = crate::presence::start(
            &hub,
            SyncSettings {
                heartbeat: config.presence.heartbeat,
                node_timeout: config.presence.node_timeout,
                single,
            },
        );
        // Presence is shared (and its joins and leaves announced) by the presence
        // task, which sees every node's connections.
        let (shared, presence_policies) = (roster.clone(), policies.clone());
        hooks.listen(move |activity| {
            if let Some(user) = &activity.user
                && presence_policies.of(&activity.channel).presence
            {
                shared.changed(&activity.channel, user);
            }
        });
        let webhooks =
            Webhooks::start(&config.webhooks, &name, hub.shutdown_token(), stats.clone());
        if let Some(webhooks) = webhooks {
            let notify = webhooks.clone();
            hooks.listen(move |activity| notify.notify(activity));
            hooks.check_client_events(move |event| {
                let webhooks = webhooks.clone();
                async move { webhooks.check_client_event(&event).await }
            });
        }

        let sink = |name: &'static str| Sink {
            hub: hub.clone(),
            stats: stats.clone(),
            readiness: components.register(name),
            event_limits: limits.events(),
            shared_broker: !single,
        };
        if let Some(postgres) = &config.postgres {
            crate::source::postgres::spawn(sink("postgres source"), postgres.clone());
        }
        #[cfg(not(feature = "redis"))]
        let _ = redis_source_url;
        #[cfg(feature = "redis")]
        if let (Some(source), Some(url)) = (&config.redis_source, redis_source_url) {
            crate::source::redis::spawn(
                sink("redis source"),
                source.clone(),
                url,
                &config.redis.prefix,
            );
        }

        let sessions = Sessions::new(
            SessionParts {
                hub: hub.clone(),
                auth: auth.clone(),
                policies,
                roster: roster.clone(),
                hooks: hooks.clone(),
                stats: stats.clone(),
            },
            SessionSettings {
                max_channels_per_connection: limits.max_channels_per_connection,
                leeway: config.auth.leeway,
                client_publish_rate: config.ws.client_publish_rate,
                client_publish_burst: config.ws.client_publish_burst,
                reconnect_within: config.shutdown.reconnect_within,
                event_limits: limits.events(),
            },
        );
        let http = HttpSettings {
            http: config.http.clone(),
            sse: config.sse.clone(),
            ws: config.ws.clone(),
            demo: config.demo.clone(),
            limits: config.limits.clone(),
            cookie: config.auth.cookie.clone(),
            publish_rates,
            ops: config.ops.clone(),
        };
        let services = Services::new(
            hub,
            sessions,
            inbox,
            auth,
            stats,
            components,
            Arc::new(http),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                services,
                hooks,
                roster,
                config,
            }),
        })
    }

    /// The hub: publish, subscribe, admit.
    pub fn hub(&self) -> &Hub {
        &self.inner.services.hub
    }

    /// The node's HTTP routes, ready to serve or to nest into an application's
    /// router.
    pub fn router(&self) -> Router {
        crate::http::router(self.inner.services.clone())
    }

    /// The operational routes alone (`/healthz`, `/readyz`, `/stats`, `/metrics`),
    /// for an address of their own: with `ops.listen` set, [`Node::router`] leaves
    /// `/stats` and `/metrics` out. [`crate::serve_ops`] serves them.
    pub fn ops_router(&self) -> Router {
        crate::http::ops_router(self.inner.services.clone())
    }

    /// The notification inbox and tasks.
    pub fn inbox(&self) -> &Inbox {
        &self.inner.services.inbox
    }

    /// Where an application registers hooks on joins, leaves and client events.
    pub fn hooks(&self) -> &Hooks {
        &self.inner.hooks
    }

    /// The users present on `channel` (for namespaces with presence) on every node.
    pub fn presence(&self, channel: &ChannelName) -> Vec<Member> {
        self.inner.roster.members(channel)
    }

    /// The credential checker (to mint tokens with the configured secret).
    pub fn authenticator(&self) -> &Authenticator {
        &self.inner.services.auth
    }

    /// The readiness of the node's parts, where an application may register its
    /// own for `/readyz` to report.
    pub fn components(&self) -> &Components {
        &self.inner.services.components
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether the node can accept events now (what `/readyz` says).
    pub async fn ready(&self) -> Result<(), String> {
        self.inner.services.ready().await
    }

    /// The counters, for `/stats`.
    pub fn stats(&self) -> Snapshot {
        let services = &self.inner.services;
        services.stats.snapshot(services.hub.gauges())
    }

    /// The counters in Prometheus text format, for `/metrics`.
    pub fn prometheus(&self) -> String {
        let services = &self.inner.services;
        services.stats.prometheus(services.hub.gauges())
    }

    /// Starts a graceful shutdown: streams end with a reconnect hint, the server
    /// stops accepting.
    pub fn shutdown(&self) {
        self.hub().shutdown();
    }

    /// What the HTTP face of the node is made of, for the server.
    pub(crate) fn services(&self) -> &Services {
        &self.inner.services
    }
}
