//! The delivery engine: routes new record versions to subscriptions (one outbox entry each, in
//! the publish transaction) and runs one worker per push subscription that claims due entries and
//! hands them to the adapter. The engine owns everything an adapter must not: projection to the
//! subscriber's grant, timeouts, exponential backoff with jitter and `Retry-After`, max attempts
//! and max age, per-record order, dead letters, the audit of each delivery, and stopping a
//! subscription whose receiver answers 410. The backlog lives in the store, never in memory.
//!
//! Here: the engine and its subscriptions, built from the config. `worker.rs` runs one
//! subscription's loop (claim, pace, wake); `attempt.rs` is the one attempt path for one or many
//! envelopes and its settlements; `envelope.rs` projects a version to the subscriber's grant;
//! `backoff.rs` is the retry arithmetic.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use adapters::{BuildContext, Direction, Outbound};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::config::{Config, DeliverySection};
use crate::policy::Policy;
use crate::routing::jq::JqProgram;
use crate::store::{Store, StoreError};

mod attempt;
mod backoff;
mod envelope;
pub mod reconcile;
mod worker;

pub use backoff::backoff;

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// An adapter could not be built.
    #[error("subscription {subscription}: {source}")]
    Adapter {
        /// Which one.
        subscription: String,
        /// Why.
        #[source]
        source: adapters::AdapterError,
    },
    /// A development secret could not be written.
    #[error("webhook secret {0}: {1}")]
    Secret(String, std::io::Error),
}

/// A subscription, ready to route and deliver.
pub struct Subscription {
    /// Name.
    pub name: String,
    /// Receiving department.
    pub department: String,
    /// Record type.
    pub record_type: String,
    /// Purpose (its grant decides the fields).
    pub purpose: String,
    /// Push or pull.
    pub direction: Direction,
    /// Feed settings (pull).
    pub feed: Option<adapters::feed::FeedConfig>,
    mapping: Option<JqProgram>,
    notices: bool,
    adapter: Option<Arc<dyn Outbound>>,
    notify: Notify,
    disabled: AtomicBool,
    /// Settlements of delivered entries on their way to disk. An attempt's slot is free once the
    /// receiver has answered: waiting for the commit too would bound each subscription to
    /// `concurrency` deliveries per group commit. The entries stay leased (and their records'
    /// later versions wait) until their settlement is stored.
    settling: tokio_util::task::TaskTracker,
    /// Bounds those settlements: past it an attempt waits for its own.
    settle_permits: Arc<tokio::sync::Semaphore>,
    /// One of them was not stored: the worker pauses as it does when the store fails under it.
    settle_failed: AtomicBool,
}

impl Subscription {
    /// A subscription with no feed settings, mapping or notices, running.
    fn new(
        name: String,
        department: &str,
        record_type: &str,
        purpose: &str,
        direction: Direction,
        adapter: Option<Arc<dyn Outbound>>,
    ) -> Self {
        Self {
            name,
            department: department.to_owned(),
            record_type: record_type.to_owned(),
            purpose: purpose.to_owned(),
            direction,
            feed: None,
            mapping: None,
            notices: false,
            adapter,
            notify: Notify::new(),
            disabled: AtomicBool::new(false),
            settling: tokio_util::task::TaskTracker::new(),
            settle_permits: Arc::new(tokio::sync::Semaphore::new(SETTLING_PER_SUBSCRIPTION)),
            settle_failed: AtomicBool::new(false),
        }
    }

    /// Wakes whoever waits for new entries (the worker, or a feed long poll).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Whether it can carry a notice of a correction or recall: not when it maps records into
    /// the department's own shape, or writes rows of a table, whose columns a notice does not
    /// have.
    pub fn carries_notices(&self) -> bool {
        self.notices
    }

    /// Whether deliveries are stopped.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::SeqCst)
    }

    /// Which of these events the receiver holds, read back from it; `None` where it cannot be
    /// (webhooks, brokers, feeds): there the department reconciles over the API.
    pub async fn holdings(&self, ids: &[String]) -> Option<Result<adapters::Holdings, String>> {
        match &self.adapter {
            Some(a) => a.holdings(ids).await,
            None => None,
        }
    }

    /// Checks the receiver like a delivery would (push subscriptions).
    pub async fn health(&self) -> Option<Result<(), String>> {
        match &self.adapter {
            Some(a) => Some(a.health().await),
            None => None,
        }
    }
}

/// Settlements of one subscription that may be on their way to disk at once: a few group commits'
/// worth at full width.
const SETTLING_PER_SUBSCRIPTION: usize = 64;

/// The internal record type of synthetic probes: not in the catalogue, so no department can
/// read, look up or subscribe to it.
pub const PROBE_TYPE: &str = "hub-probe";
/// The internal subscription that carries probes to the hub's loopback receiver.
pub const PROBE_SUBSCRIPTION: &str = "hub-probe";

/// The internal record type of notices of corrections and recalls (`exchange::notices`): not in
/// the catalogue.
pub const NOTICE_TYPE: &str = "hub.notice";

/// The feed that carries a department's notices when no subscription of its own can.
pub fn notice_feed(department: &str) -> String {
    format!("hub-notices-{department}")
}

use crate::probe::ProbeBoard;

/// The engine.
pub struct Delivery {
    subs: Vec<Arc<Subscription>>,
    by_name: HashMap<String, usize>,
    policy: DeliverySection,
    hub: String,
    tz: chrono_tz::Tz,
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    grants: Arc<Policy>,
    metrics: Arc<crate::metrics::Metrics>,
    probes: Arc<ProbeBoard>,
    /// This process, as the owner of its leases: host, pid and a random part (a restarted node
    /// must not think it still holds its predecessor's leases).
    node: String,
}

/// A name for this process that no other node of a cluster shares.
pub fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let tag: u32 = rand::Rng::gen(&mut rand::thread_rng());
    format!("{}-{}-{tag:08x}", if host.is_empty() { "hub" } else { host }, std::process::id())
}

/// The secret behind `secret_env`: the environment variable, or, on a development hub, a random
/// secret kept in `DATA/keys/webhooks/NAME.secret` so the README's one command runs the hub.
pub(crate) fn secret_resolver(data: &Path, dev: bool) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| {
        if let Ok(v) = std::env::var(name) {
            return Some(v);
        }
        if !dev {
            return None;
        }
        let path = data.join("keys").join("webhooks").join(format!("{name}.secret"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Some(text.trim().to_owned());
        }
        use base64::Engine as _;
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
        std::fs::create_dir_all(path.parent()?).ok()?;
        crate::ledger::keys::write_private(&path, secret.as_bytes()).ok()?;
        tracing::warn!(env = name, file = %path.display(), "webhook secret not in the environment; using a development secret");
        Some(secret)
    }
}

impl Delivery {
    /// Compiles filters and builds every push adapter.
    pub fn build(
        config: &Config,
        catalog: Arc<Catalog>,
        grants: Arc<Policy>,
        store: Arc<dyn Store>,
        metrics: Arc<crate::metrics::Metrics>,
        data: &Path,
    ) -> Result<Self, DeliveryError> {
        let secret = secret_resolver(data, config.tls.dev_pki);
        let resolve = |p: &str| config.resolve(p);
        let pki = crate::pki::DevPki::new(data);
        let identity = match (std::fs::read(pki.hub_client_cert()), std::fs::read(pki.hub_client_key())) {
            (Ok(mut cert), Ok(key)) => {
                cert.extend(key);
                Some(cert)
            }
            _ => None,
        };
        let ctx = BuildContext { secret: &secret, resolve: &resolve, client_identity_pem: identity };
        let mut subs = Vec::new();
        for s in &config.subscriptions {
            let name = s.name.get_ref().clone();
            let settings = s.settings.as_ref().map(|t| t.get_ref().clone()).unwrap_or_default();
            let kind = adapters::kind(s.adapter.get_ref())
                .map_err(|source| DeliveryError::Adapter { subscription: name.clone(), source })?;
            let adapter = match kind.build {
                Some(build) => Some(Arc::from(
                    build(&settings, &ctx)
                        .map_err(|source| DeliveryError::Adapter { subscription: name.clone(), source })?,
                )),
                None => None,
            };
            let feed = match kind.direction {
                Direction::Pull => Some(
                    adapters::settings(&settings)
                        .map_err(|source| DeliveryError::Adapter { subscription: name.clone(), source })?,
                ),
                Direction::Push => None,
            };
            let mut sub = Subscription::new(
                name,
                s.department.get_ref(),
                s.record_type.get_ref(),
                s.purpose.get_ref(),
                kind.direction,
                adapter,
            );
            sub.feed = feed;
            sub.mapping = s.mapping.as_ref().and_then(|m| JqProgram::compile(m.get_ref()).ok());
            sub.notices = s.mapping.is_none() && s.adapter.get_ref() != "sql_table";
            subs.push(Arc::new(sub));
        }
        // Every department's notice feed: corrections and recalls of records it read or looked
        // up, when no subscription of its own carries them.
        for d in &config.departments {
            let department = d.id.get_ref();
            let mut sub =
                Subscription::new(notice_feed(department), department, NOTICE_TYPE, "notices", Direction::Pull, None);
            sub.feed = Some(
                adapters::settings(&toml::Table::new())
                    .map_err(|source| DeliveryError::Adapter { subscription: sub.name.clone(), source })?,
            );
            subs.push(Arc::new(sub));
        }
        let probes: Arc<ProbeBoard> = Arc::default();
        if config.checks.iter().any(|c| c.kind.get_ref() == "synthetic") {
            subs.push(
                probe_subscription(probes.clone())
                    .map_err(|source| DeliveryError::Adapter { subscription: PROBE_SUBSCRIPTION.into(), source })?,
            );
        }
        let by_name = subs.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        Ok(Self {
            subs,
            by_name,
            policy: config.delivery.clone(),
            hub: config.hub.name.get_ref().clone(),
            tz: config.timezone(),
            store,
            catalog,
            grants,
            metrics,
            probes,
            node: node_id(),
        })
    }

    /// The grants every delivery is projected by.
    pub fn grants(&self) -> &Policy {
        &self.grants
    }

    /// Today in the hub's time zone (grants expire by day).
    pub fn today(&self) -> chrono::NaiveDate {
        chrono::Utc::now().with_timezone(&self.tz).date_naive()
    }

    /// Registers interest in a probe event; the receiver at the end of the pipeline completes it.
    pub fn expect_probe(&self, event_id: &str) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.probes.lock().unwrap_or_else(|e| e.into_inner()).insert(event_id.to_owned(), tx);
        rx
    }

    /// Wakes the workers and feed readers of these subscriptions.
    pub fn notify(&self, names: &[String]) {
        for n in names {
            if let Some(s) = self.get(n) {
                s.notify.notify_waiters();
            }
        }
    }

    /// A subscription by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Subscription>> {
        self.by_name.get(name).map(|i| &self.subs[*i])
    }

    /// Every subscription.
    pub fn all(&self) -> &[Arc<Subscription>] {
        &self.subs
    }

    /// Marks a subscription stopped or running (the store holds the durable state).
    pub fn set_disabled(&self, name: &str, disabled: bool) {
        if let Some(s) = self.get(name) {
            s.disabled.store(disabled, Ordering::SeqCst);
            s.notify.notify_waiters();
        }
    }

    /// Starts one worker per push subscription; they stop when `shutdown` turns true.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        self.subs
            .iter()
            .filter(|s| s.adapter.is_some())
            .map(|s| {
                let (engine, sub, shutdown) = (self.clone(), s.clone(), shutdown.clone());
                tokio::spawn(async move { engine.run(sub, shutdown).await })
            })
            .collect()
    }

    /// Gives back this node's leases once its workers have stopped, so that what they left
    /// unfinished goes out at once from the next start or another node.
    pub async fn release_leases(&self) {
        match self.store.release_leases(&self.node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "leases of unfinished deliveries given back"),
            Err(e) => tracing::warn!(error = %e, "cannot give back the delivery leases; they run out on their own"),
        }
    }

    /// Marks stopped subscriptions from the store (after a restart) and tells the store which
    /// subscriptions a worker here pushes and which are feeds, so it may serve them from the log.
    pub async fn load_states(&self) -> Result<(), StoreError> {
        let served = self.subs.iter().filter(|s| s.adapter.is_some() || s.direction == Direction::Pull);
        let served = served.map(|s| crate::store::FromLog {
            name: s.name.clone(),
            record_type: s.record_type.clone(),
            feed: s.adapter.is_none(),
        });
        self.store.serve_from_log(served.collect()).await?;
        for st in self.store.subscription_states().await? {
            self.set_disabled(&st.name, st.disabled);
        }
        Ok(())
    }
}

/// The probe subscription: a webhook, signed with a fresh secret, to the receiver on a loopback
/// port inside the hub (`crate::probe`) that checks the signature and completes the waiting probe.
fn probe_subscription(probes: Arc<ProbeBoard>) -> Result<Arc<Subscription>, adapters::AdapterError> {
    use base64::Engine as _;
    let crate::probe::Receiver { url, key } =
        crate::probe::spawn(probes).map_err(|e| adapters::AdapterError::Build(format!("probe receiver: {e}")))?;
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
    let settings: toml::Table = toml::toml! { url = (url) secret_env = "HUB_PROBE_SECRET" };
    let secret_fn = move |_: &str| Some(secret.clone());
    let resolve = |p: &str| std::path::PathBuf::from(p);
    let ctx = BuildContext { secret: &secret_fn, resolve: &resolve, client_identity_pem: None };
    let config: adapters::webhook::WebhookConfig = adapters::settings(&settings)?;
    let adapter = adapters::webhook::WebhookSink::build(&config, &ctx)?;
    Ok(Arc::new(Subscription::new(
        PROBE_SUBSCRIPTION.into(),
        "hub",
        PROBE_TYPE,
        "synthetic-probe",
        Direction::Push,
        Some(Arc::new(adapter)),
    )))
}
