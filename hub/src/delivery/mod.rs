//! The delivery engine: routes new record versions to subscriptions (one outbox entry each, in
//! the publish transaction) and runs one worker per push subscription that claims due entries and
//! hands them to the adapter. The engine owns everything an adapter must not: projection to the
//! subscriber's grant, timeouts, exponential backoff with jitter and `Retry-After`, max attempts
//! and max age, per-record order, dead letters, the audit of each delivery, and stopping a
//! subscription whose receiver answers 410. The backlog lives in the store, never in memory.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adapters::{BuildContext, Direction, Envelope, EnvelopeFields, Outbound, Outcome};
use serde_json::json;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::catalog::pointer::project;
use crate::catalog::Catalog;
use crate::config::{Config, DeliverySection};
use crate::ledger::{Action, NewEntry};
use crate::policy::{Access, Policy, Principal};
use crate::routing::jq::JqProgram;
use crate::store::{Lease, OutboxRow, RecordVersion, Settlement, Store, StoreError};

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
    adapter: Option<Arc<dyn Outbound>>,
    notify: Notify,
    disabled: AtomicBool,
}

impl Subscription {
    /// Wakes whoever waits for new entries (the worker, or a feed long poll).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Whether deliveries are stopped.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::SeqCst)
    }

    /// Checks the receiver like a delivery would (push subscriptions).
    pub async fn health(&self) -> Option<Result<(), String>> {
        match &self.adapter {
            Some(a) => Some(a.health().await),
            None => None,
        }
    }
}

/// The internal record type of synthetic probes: not in the catalogue, so no department can
/// read, look up or subscribe to it.
pub const PROBE_TYPE: &str = "hub-probe";
/// The internal subscription that carries probes to the hub's loopback receiver.
pub const PROBE_SUBSCRIPTION: &str = "hub-probe";

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
            subs.push(Arc::new(Subscription {
                name,
                department: s.department.get_ref().clone(),
                record_type: s.record_type.get_ref().clone(),
                purpose: s.purpose.get_ref().clone(),
                direction: kind.direction,
                feed,
                mapping: s.mapping.as_ref().and_then(|m| JqProgram::compile(m.get_ref()).ok()),
                adapter,
                notify: Notify::new(),
                disabled: AtomicBool::new(false),
            }));
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

    /// The envelope for an outbox entry, projected to the subscriber's grant as of now.
    /// `Ok(Err(reason))` when it can no longer be delivered at all.
    pub async fn envelope(
        &self,
        sub: &Subscription,
        row: &OutboxRow,
    ) -> Result<Result<(Envelope, RecordVersion), String>, StoreError> {
        let Some(rec) = self.store.version(&row.record_type, &row.key, row.version).await? else {
            return Ok(Err("the record version no longer exists".into()));
        };
        if row.record_type == PROBE_TYPE && sub.name == PROBE_SUBSCRIPTION {
            let envelope = Envelope::new(EnvelopeFields {
                id: row.event_id.clone(),
                source: format!("urn:hub:{}:probe", self.hub),
                ty: "hub.probe.v1".into(),
                subject: format!("{PROBE_TYPE}/{}", rec.key),
                time: chrono::Utc::now(),
                data: rec.payload.clone(),
                record_version: rec.version,
                audit_seq: rec.audit_seq,
            });
            return Ok(envelope.map(|e| (e, rec)).map_err(|e| e.to_string()));
        }
        let Some(t) = self.catalog.get(&row.record_type) else {
            return Ok(Err("the record type is no longer configured".into()));
        };
        let today = chrono::Utc::now().with_timezone(&self.tz).date_naive();
        let who = Principal::Department(sub.department.clone());
        let data = match self.grants.read_access(t, &who, Some(&sub.purpose), today) {
            Ok(Access::Full) => rec.payload.clone(),
            Ok(Access::Fields(fields)) => project(&rec.payload, &fields),
            Err(denied) => return Ok(Err(format!("not delivered: {denied}"))),
        };
        // The department's own shape, after the projection: a mapping never sees ungranted fields.
        let data = match &sub.mapping {
            None => data,
            Some(m) => match m.map(&data) {
                Ok(mapped) => mapped,
                Err(e) => return Ok(Err(format!("not delivered: {e}"))),
            },
        };
        let time = chrono::DateTime::parse_from_rfc3339(&rec.received_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|_| chrono::Utc::now());
        let envelope = Envelope::new(EnvelopeFields {
            id: row.event_id.clone(),
            source: format!("urn:hub:{}:department:{}", self.hub, t.owner),
            ty: format!("hub.record.{}.v{}", t.id, rec.schema_version),
            subject: format!("{}/{}", t.id, rec.key),
            time,
            data,
            record_version: rec.version,
            audit_seq: rec.audit_seq,
        });
        Ok(envelope.map(|e| (e, rec)).map_err(|e| e.to_string()))
    }

    /// The audit entry of a delivery (or dead letter) to `sub`: the subscriber is the actor, so a
    /// citizen's access log shows who received their data.
    pub fn receipt_entry(
        sub: &Subscription,
        rec: Option<&RecordVersion>,
        row: &OutboxRow,
        action: Action,
        outcome: &str,
        reason: Option<&str>,
    ) -> NewEntry {
        NewEntry {
            record_type: Some(row.record_type.clone()),
            record_key: Some(row.key.clone()),
            record_version: Some(row.version),
            subjects: rec.map(|r| r.subjects.clone()).unwrap_or_default(),
            purpose: Some(sub.purpose.clone()),
            detail: Some(json!({
                "subscription": sub.name, "event_id": row.event_id, "attempts": row.attempts + 1, "reason": reason,
            })),
            ..NewEntry::new(sub.department.clone(), action, outcome)
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

    /// Marks stopped subscriptions from the store (after a restart).
    pub async fn load_states(&self) -> Result<(), StoreError> {
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
    Ok(Arc::new(Subscription {
        name: PROBE_SUBSCRIPTION.into(),
        department: "hub".into(),
        record_type: PROBE_TYPE.into(),
        purpose: "synthetic-probe".into(),
        direction: Direction::Push,
        feed: None,
        mapping: None,
        adapter: Some(Arc::new(adapter)),
        notify: Notify::new(),
        disabled: AtomicBool::new(false),
    }))
}

/// What one attempt means for the worker's pacing.
enum Verdict {
    Delivered,
    Retry(Duration),
    Settled,
}

/// Exponential backoff with full jitter in [d/2, d], at least the receiver's `Retry-After`,
/// never beyond the cap.
pub fn backoff(policy: &DeliverySection, failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = policy.backoff_initial_ms.saturating_mul(1u64 << exp).min(policy.backoff_max_ms);
    let jittered = rand::Rng::gen_range(&mut rand::thread_rng(), base / 2..=base.max(1));
    let ms = jittered.max(retry_after.map_or(0, |d| d.as_millis() as u64)).min(policy.backoff_max_ms);
    Duration::from_millis(ms)
}

impl Delivery {
    async fn run(self: Arc<Self>, sub: Arc<Subscription>, mut shutdown: watch::Receiver<bool>) {
        let concurrency = self.policy.concurrency.max(1);
        // Adapters that take several envelopes per call (folders, tables, queues) get batches of
        // that size: one call and one group of settlements for the lot.
        let per_call = sub.adapter.as_ref().map_or(1, |a| a.max_batch().max(1));
        let (done_tx, mut done_rx) = mpsc::channel::<(Vec<i64>, Verdict)>(concurrency * 2);
        let mut in_flight: HashSet<i64> = HashSet::new();
        let mut failures: u32 = 0;
        let mut paused_until: Option<Instant> = None;
        let mut last_expiry: Option<Instant> = None;
        let max_age = Duration::from_secs(self.policy.max_age_hours * 3600);
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Registered before the state is read: a publish, or an operator's restart, that
            // notifies while this pass runs still wakes the wait below (notify_waiters keeps no
            // permit for a waiter that registers later).
            let notified = sub.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            while let Ok((ids, v)) = done_rx.try_recv() {
                for id in ids {
                    in_flight.remove(&id);
                }
                self.pace(&v, &mut failures, &mut paused_until);
            }
            let now = Instant::now();
            let paused = paused_until.is_some_and(|t| t > now);
            // While the receiver fails, only one entry probes it; the rest wait on disk.
            let width = if failures > 0 { 1 } else { concurrency };
            let slots = width * per_call;
            let capacity = if sub.is_disabled() || paused { 0 } else { slots.saturating_sub(in_flight.len()) };
            if capacity > 0 {
                if last_expiry.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_expiry = Some(now);
                    self.expire(&sub, max_age).await;
                }
                let now_ms = chrono::Utc::now().timestamp_millis();
                let lease =
                    Lease { owner: self.node.clone(), until_ms: now_ms + self.policy.lease().as_millis() as i64 };
                match self.store.claim(&sub.name, now_ms, capacity as u32, lease).await {
                    Ok(rows) => {
                        // A claim holds at most one entry per record, so batches never reorder
                        // the versions of one record.
                        let mut rows = rows.into_iter().peekable();
                        while rows.peek().is_some() {
                            let batch: Vec<OutboxRow> = rows.by_ref().take(per_call).collect();
                            let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
                            in_flight.extend(ids.iter().copied());
                            let (engine, sub, tx) = (self.clone(), sub.clone(), done_tx.clone());
                            tokio::spawn(async move {
                                let verdict = engine.attempt_batch(&sub, batch).await;
                                let _ = tx.send((ids, verdict)).await;
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(subscription = %sub.name, error = %e, "cannot read the outbox");
                        paused_until = Some(now + Duration::from_secs(1));
                    }
                }
            }
            // Slots still free after this claim: with none free, a completion wakes the worker, so
            // the store is not asked for the next due time on every delivery of a large backlog.
            let free = if capacity == 0 { 0 } else { slots.saturating_sub(in_flight.len()) };
            let timer = self.next_wake(&sub, paused_until, in_flight.len(), free).await;
            tokio::select! {
                () = &mut notified => {}
                Some((ids, v)) = done_rx.recv() => {
                    for id in ids {
                        in_flight.remove(&id);
                    }
                    self.pace(&v, &mut failures, &mut paused_until);
                }
                () = sleep_until(timer) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let attempts in flight settle (or time out) so their outcome is recorded.
        let grace = Duration::from_secs(self.policy.attempt_timeout_secs + 5);
        while !in_flight.is_empty() {
            match tokio::time::timeout(grace, done_rx.recv()).await {
                Ok(Some((ids, _))) => {
                    for id in ids {
                        in_flight.remove(&id);
                    }
                }
                _ => break,
            }
        }
    }

    fn count(&self, sub: &Subscription, outcome: &str) {
        let labels = crate::metrics::DeliveryLabels { subscription: sub.name.clone(), outcome: outcome.to_owned() };
        self.metrics.deliveries.get_or_create(&labels).inc();
    }

    fn pace(&self, v: &Verdict, failures: &mut u32, paused_until: &mut Option<Instant>) {
        match v {
            Verdict::Delivered => {
                *failures = 0;
                *paused_until = None;
            }
            Verdict::Retry(delay) => {
                *failures += 1;
                *paused_until = Some(Instant::now() + *delay);
            }
            Verdict::Settled => {}
        }
    }

    /// When the worker must look again without being woken.
    async fn next_wake(
        &self,
        sub: &Subscription,
        paused_until: Option<Instant>,
        in_flight: usize,
        capacity: usize,
    ) -> Option<Instant> {
        let wake = self.own_wake(sub, paused_until, in_flight, capacity).await;
        if !self.store.is_shared() {
            return wake;
        }
        // Other nodes route entries here and leave entries behind when they die; nothing here is
        // woken by either, so an idle worker looks again every `poll_ms`.
        let poll = Instant::now() + Duration::from_millis(self.policy.poll_ms);
        Some(wake.map_or(poll, |t| t.min(poll)))
    }

    async fn own_wake(
        &self,
        sub: &Subscription,
        paused_until: Option<Instant>,
        in_flight: usize,
        capacity: usize,
    ) -> Option<Instant> {
        let now = Instant::now();
        if let Some(t) = paused_until.filter(|t| *t > now) {
            return Some(t);
        }
        if sub.is_disabled() || (capacity == 0 && in_flight > 0) {
            return None;
        }
        match self.store.next_due(&sub.name).await {
            Ok(Some(due)) => {
                let wait = due - chrono::Utc::now().timestamp_millis();
                // Entries due now but blocked behind one in flight are released by its completion.
                if wait <= 0 && in_flight > 0 {
                    return None;
                }
                Some(now + Duration::from_millis(wait.clamp(5, 60_000) as u64))
            }
            Ok(None) => None,
            Err(_) => Some(now + Duration::from_secs(1)),
        }
    }

    async fn expire(&self, sub: &Subscription, max_age: Duration) {
        let cutoff = chrono::Utc::now().timestamp_millis() - max_age.as_millis() as i64;
        let template = NewEntry::new(sub.department.clone(), Action::DeadLetter, "dead");
        let error = format!("not delivered within {} hours", self.policy.max_age_hours);
        match self
            .store
            .expire(&sub.name, cutoff, error, NewEntry { purpose: Some(sub.purpose.clone()), ..template })
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(subscription = %sub.name, events = n, "events dead-lettered by age"),
            Err(e) => tracing::error!(subscription = %sub.name, error = %e, "cannot expire old events"),
        }
    }

    async fn attempt(&self, sub: &Subscription, row: OutboxRow) -> Verdict {
        let Some(adapter) = &sub.adapter else { return Verdict::Settled };
        let (envelope, rec) = match self.envelope(sub, &row).await {
            Ok(Ok(x)) => x,
            Ok(Err(reason)) => return self.dead(sub, None, &row, &reason).await,
            Err(e) => {
                tracing::error!(subscription = %sub.name, error = %e, "cannot load the record to deliver");
                return Verdict::Retry(Duration::from_secs(1));
            }
        };
        let limit = Duration::from_secs(self.policy.attempt_timeout_secs);
        let outcome = match tokio::time::timeout(limit, adapter.deliver(std::slice::from_ref(&envelope))).await {
            Ok(o) => o,
            Err(_) => Outcome::Retry { reason: "the attempt timed out".into(), retry_after: None },
        };
        match outcome {
            Outcome::Delivered => {
                let entry = Self::receipt_entry(sub, Some(&rec), &row, Action::Deliver, "ok", None);
                if let Err(e) = self.store.settle(row.id, Settlement::Delivered, Some(entry)).await {
                    // Not recorded: the entry stays pending and goes again (at least once).
                    tracing::error!(subscription = %sub.name, error = %e, "delivered but not recorded");
                    return Verdict::Retry(Duration::from_secs(1));
                }
                tracing::debug!(subscription = %sub.name, event = %row.event_id, "delivered");
                self.count(sub, "delivered");
                Verdict::Delivered
            }
            Outcome::Retry { reason, retry_after } => {
                let attempts = row.attempts + 1;
                if attempts >= self.policy.max_attempts {
                    return self
                        .dead(sub, Some(&rec), &row, &format!("gave up after {attempts} attempts: {reason}"))
                        .await;
                }
                let delay = backoff(&self.policy, attempts, retry_after);
                let at_ms = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
                tracing::info!(subscription = %sub.name, attempts, delay_ms = delay.as_millis() as u64, reason = %reason, "delivery will be retried");
                self.count(sub, "retry");
                if let Err(e) = self.store.settle(row.id, Settlement::Retry { at_ms, error: reason }, None).await {
                    tracing::error!(subscription = %sub.name, error = %e, "cannot record the retry");
                }
                Verdict::Retry(delay)
            }
            Outcome::Reject { reason } => self.dead(sub, Some(&rec), &row, &reason).await,
            Outcome::Gone { reason } => {
                let verdict = self.dead(sub, Some(&rec), &row, &reason).await;
                self.stop_subscription(sub, reason).await;
                verdict
            }
        }
    }

    /// The receiver said it is gone for good: the subscription stops until an operator restarts it.
    async fn stop_subscription(&self, sub: &Subscription, reason: String) {
        let entry = NewEntry {
            detail: Some(json!({ "subscription": sub.name, "disabled": true, "reason": reason })),
            ..NewEntry::new("hub", Action::Admin, "subscription-disabled")
        };
        match self.store.set_subscription(&sub.name, true, Some(reason.clone()), entry).await {
            Ok(()) => self.set_disabled(&sub.name, true),
            Err(e) => tracing::error!(subscription = %sub.name, error = %e, "cannot record the stopped subscription"),
        }
        tracing::error!(subscription = %sub.name, reason = %reason, "receiver is gone; subscription stopped");
    }

    /// One call for several entries (in claim order): settled together when the receiver confirms
    /// or defers the lot; when it rejects the batch, each entry is tried alone so that only the
    /// bad one goes to the dead letters.
    async fn attempt_batch(&self, sub: &Subscription, rows: Vec<OutboxRow>) -> Verdict {
        if rows.len() == 1 {
            let Some(row) = rows.into_iter().next() else { return Verdict::Settled };
            return self.attempt(sub, row).await;
        }
        let Some(adapter) = &sub.adapter else { return Verdict::Settled };
        let (mut ready, mut envelopes) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for row in rows {
            match self.envelope(sub, &row).await {
                Ok(Ok((envelope, rec))) => {
                    envelopes.push(envelope);
                    ready.push((row, rec));
                }
                Ok(Err(reason)) => {
                    self.dead(sub, None, &row, &reason).await;
                }
                Err(e) => {
                    // The rest stay pending and are claimed again.
                    tracing::error!(subscription = %sub.name, error = %e, "cannot load a record to deliver");
                    return Verdict::Retry(Duration::from_secs(1));
                }
            }
        }
        if ready.is_empty() {
            return Verdict::Settled;
        }
        let limit = Duration::from_secs(self.policy.attempt_timeout_secs);
        let outcome = match tokio::time::timeout(limit, adapter.deliver(&envelopes)).await {
            Ok(o) => o,
            Err(_) => Outcome::Retry { reason: "the attempt timed out".into(), retry_after: None },
        };
        match outcome {
            Outcome::Delivered => {
                let settlements = ready
                    .iter()
                    .map(|(row, rec)| {
                        let entry = Self::receipt_entry(sub, Some(rec), row, Action::Deliver, "ok", None);
                        (row.id, Settlement::Delivered, Some(entry))
                    })
                    .collect();
                if let Err(e) = self.store.settle_many(settlements).await {
                    tracing::error!(subscription = %sub.name, error = %e, "delivered but not recorded");
                    return Verdict::Retry(Duration::from_secs(1));
                }
                tracing::debug!(subscription = %sub.name, events = ready.len(), "batch delivered");
                for _ in &ready {
                    self.count(sub, "delivered");
                }
                Verdict::Delivered
            }
            Outcome::Retry { reason, retry_after } => {
                let (mut settlements, mut delay) = (Vec::with_capacity(ready.len()), Duration::ZERO);
                for (row, rec) in &ready {
                    let attempts = row.attempts + 1;
                    if attempts >= self.policy.max_attempts {
                        self.dead(sub, Some(rec), row, &format!("gave up after {attempts} attempts: {reason}")).await;
                        continue;
                    }
                    let wait = backoff(&self.policy, attempts, retry_after);
                    delay = delay.max(wait);
                    let at_ms = chrono::Utc::now().timestamp_millis() + wait.as_millis() as i64;
                    settlements.push((row.id, Settlement::Retry { at_ms, error: reason.clone() }, None));
                    self.count(sub, "retry");
                }
                tracing::info!(subscription = %sub.name, events = settlements.len(), delay_ms = delay.as_millis() as u64, reason = %reason, "batch will be retried");
                if let Err(e) = self.store.settle_many(settlements).await {
                    tracing::error!(subscription = %sub.name, error = %e, "cannot record the retry");
                }
                if delay.is_zero() {
                    Verdict::Settled
                } else {
                    Verdict::Retry(delay)
                }
            }
            Outcome::Reject { reason } => {
                tracing::warn!(subscription = %sub.name, events = ready.len(), reason = %crate::mask::scrub(&reason), "batch rejected; trying its entries one by one");
                let mut verdict = Verdict::Settled;
                for (row, _) in ready {
                    verdict = self.attempt(sub, row).await;
                    if matches!(verdict, Verdict::Retry(_)) {
                        // The rest stay pending and are claimed again after the pause.
                        break;
                    }
                }
                verdict
            }
            Outcome::Gone { reason } => {
                for (row, rec) in &ready {
                    self.dead(sub, Some(rec), row, &reason).await;
                }
                self.stop_subscription(sub, reason).await;
                Verdict::Settled
            }
        }
    }

    async fn dead(&self, sub: &Subscription, rec: Option<&RecordVersion>, row: &OutboxRow, reason: &str) -> Verdict {
        let reason = crate::mask::scrub(reason);
        let entry = Self::receipt_entry(sub, rec, row, Action::DeadLetter, "dead", Some(&reason));
        match self.store.settle(row.id, Settlement::Dead { error: reason.clone() }, Some(entry)).await {
            Ok(()) => {
                tracing::warn!(subscription = %sub.name, event = %row.event_id, reason = %reason, "event dead-lettered");
                self.count(sub, "dead");
                Verdict::Settled
            }
            Err(e) => {
                tracing::error!(subscription = %sub.name, error = %e, "cannot record the dead letter");
                Verdict::Retry(Duration::from_secs(1))
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_honours_retry_after_and_stops_at_the_cap() {
        let p = DeliverySection { backoff_initial_ms: 1000, backoff_max_ms: 60_000, ..Default::default() };
        for n in 1..=12u32 {
            let d = backoff(&p, n, None).as_millis() as u64;
            let base = (1000u64 << (n - 1)).min(60_000);
            assert!(d >= base / 2 && d <= base, "attempt {n}: {d} ms outside [{}, {base}]", base / 2);
        }
        assert_eq!(backoff(&p, 1, Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert_eq!(backoff(&p, 1, Some(Duration::from_secs(3600))), Duration::from_secs(60));
    }
}
