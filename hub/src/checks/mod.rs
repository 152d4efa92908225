//! The hub's health checks, implemented against `ops::check::Check`: receivers reachable,
//! delivery backlog, dead letters, the audit chain, storage and certificates. Summaries carry
//! counts, durations and names of subscriptions and certificates only, so ops and the
//! data-blind vendor can both read them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};
use ops::runner::{Entry, History, Observer, Run};
use ops::schedule::Schedule;

use crate::config::checks::{
    BacklogThresholds, CertificateThresholds, CheckKind, DeadLetterThresholds, StorageThresholds, SyntheticThresholds,
};
use crate::config::Config;
use crate::delivery::Delivery;
use crate::store::{CheckRun, Store};

/// An hourly chain check makes one full pass a day.
const DEFAULT_FULL_EVERY: u32 = 24;

struct Named {
    name: String,
}

struct AdapterReachability {
    n: Named,
    delivery: Arc<Delivery>,
    inbound: Arc<crate::inbound::Inbounds>,
}

#[async_trait]
impl Check for AdapterReachability {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::AdapterReachability.as_str()
    }
    async fn run(&self) -> Report {
        let mut probes = tokio::task::JoinSet::new();
        for s in self.delivery.all().iter().filter(|s| !s.is_disabled()) {
            let s = s.clone();
            probes.spawn(async move { (s.name.clone(), s.health().await) });
        }
        for c in self.inbound.all() {
            let c = c.clone();
            probes.spawn(async move { (format!("inbound {}", c.name), Some(c.health().await)) });
        }
        let (mut ok, mut failed) = (0usize, Vec::new());
        while let Some(Ok((name, result))) = probes.join_next().await {
            match result {
                Some(Ok(())) => ok += 1,
                Some(Err(reason)) => failed.push(format!("{name} ({})", crate::mask::scrub(&reason))),
                None => {}
            }
        }
        failed.sort();
        let stopped = self.delivery.all().iter().filter(|s| s.is_disabled()).count();
        let status = if !failed.is_empty() || stopped > 0 { Status::Critical } else { Status::Ok };
        let summary = if failed.is_empty() && stopped == 0 {
            format!("all {ok} push receivers and inbound sources answer")
        } else {
            format!("{} unreachable, {stopped} stopped: {}", failed.len(), failed.join(", "))
        };
        Report::new(status, summary)
            .with("reachable", ok as f64)
            .with("unreachable", failed.len() as f64)
            .with("stopped", stopped as f64)
    }
}

struct DeliveryBacklog {
    n: Named,
    t: BacklogThresholds,
    store: Arc<dyn Store>,
}

#[async_trait]
impl Check for DeliveryBacklog {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::DeliveryBacklog.as_str()
    }
    async fn run(&self) -> Report {
        let counts = match self.store.delivery_counts().await {
            Ok(c) => c,
            Err(e) => return Report::new(Status::Critical, format!("cannot read the outbox: {e}")),
        };
        let t = &self.t;
        let now = chrono::Utc::now().timestamp_millis();
        let mut worst = Status::Ok;
        let mut report = Report::new(Status::Ok, String::new());
        let mut notes = Vec::new();
        let mut total = 0u64;
        for c in &counts {
            let age = c.oldest_pending_ms.map_or(0.0, |o| ((now - o).max(0) / 1000) as f64);
            total += c.pending;
            let s = Status::from_thresholds(c.pending as f64, Some(t.warn_pending), Some(t.critical_pending))
                .max(Status::from_thresholds(age, Some(t.warn_age_secs), Some(t.critical_age_secs)));
            if s > Status::Ok {
                notes.push(format!("{}: {} pending, oldest {}s", c.subscription, c.pending, age));
            }
            worst = worst.max(s);
            report = report
                .with(format!("pending.{}", c.subscription), c.pending as f64)
                .with(format!("oldest_age_secs.{}", c.subscription), age);
        }
        report.status = worst;
        report.summary = if notes.is_empty() { format!("{total} events pending") } else { notes.join("; ") };
        report.with("pending", total as f64)
    }
}

struct DeadLetters {
    n: Named,
    t: DeadLetterThresholds,
    store: Arc<dyn Store>,
}

#[async_trait]
impl Check for DeadLetters {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::DeadLetters.as_str()
    }
    async fn run(&self) -> Report {
        let counts = match self.store.delivery_counts().await {
            Ok(c) => c,
            Err(e) => return Report::new(Status::Critical, format!("cannot read the outbox: {e}")),
        };
        let total: u64 = counts.iter().map(|c| c.dead).sum();
        let t = &self.t;
        let status = Status::from_thresholds(total as f64, Some(t.warn_dead), Some(t.critical_dead));
        let which: Vec<String> =
            counts.iter().filter(|c| c.dead > 0).map(|c| format!("{} ({})", c.subscription, c.dead)).collect();
        let summary = if which.is_empty() {
            "no dead letters".to_owned()
        } else {
            format!("{total} dead letters: {}", which.join(", "))
        };
        counts.iter().fold(Report::new(status, summary).with("dead", total as f64), |r, c| {
            r.with(format!("dead.{}", c.subscription), c.dead as f64)
        })
    }
}

/// Full passes re-read every entry; the ones between resume from the last signed checkpoint a pass
/// found intact, so an hourly check costs what was written in the hour, not the whole history.
/// The anchor lives in memory: after a restart the first run is a full pass.
struct AuditChain {
    n: Named,
    store: Arc<dyn Store>,
    full_every: u32,
    state: tokio::sync::Mutex<ChainState>,
}

#[derive(Default)]
struct ChainState {
    anchor: Option<crate::ledger::Anchor>,
    since_full: u32,
}

#[async_trait]
impl Check for AuditChain {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::AuditChain.as_str()
    }
    async fn run(&self) -> Report {
        let mut state = self.state.lock().await;
        let resume = state.anchor.clone().filter(|_| state.since_full + 1 < self.full_every);
        let full = resume.is_none();
        let result = match resume {
            Some(a) => self.store.verify_audit_since(a).await,
            None => self.store.verify_audit().await,
        };
        match result {
            Ok(Ok(r)) => {
                state.since_full = if full { 0 } else { state.since_full + 1 };
                if r.last_checkpoint.is_some() {
                    state.anchor = r.last_checkpoint.clone();
                }
                let pass = if full { "full pass" } else { "incremental pass" };
                Report::new(
                    Status::Ok,
                    format!(
                        "{pass}: {} entries verified up to seq {}, {} signed checkpoints",
                        r.entries, r.head_seq, r.checkpoints
                    ),
                )
                .with("entries", r.entries as f64)
                .with("head_seq", r.head_seq as f64)
                .with("checkpoints", r.checkpoints as f64)
                .with("full_pass", if full { 1.0 } else { 0.0 })
            }
            Ok(Err(b)) => {
                // Nothing after a break is trusted: the next run starts again from the genesis.
                *state = ChainState::default();
                Report::new(Status::Critical, b.to_string()).with("first_bad_seq", b.seq as f64)
            }
            Err(e) => Report::new(Status::Critical, format!("cannot read the audit chain: {e}")),
        }
    }
}

struct Storage {
    n: Named,
    t: StorageThresholds,
    data: PathBuf,
    store: Arc<dyn Store>,
}

#[async_trait]
impl Check for Storage {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Storage.as_str()
    }
    async fn run(&self) -> Report {
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64;
        // A database server reports its own size; its WAL and disk are the server's to watch.
        let (db_bytes, wal_bytes) = match self.store.database_bytes().await {
            Ok(Some(n)) => (n as f64, 0.0),
            Ok(None) => {
                let db = crate::store::sqlite::db_path(&self.data);
                (size(db.clone()), size(db.with_extension("db-wal")))
            }
            Err(e) => return Report::new(Status::Critical, format!("cannot read the database size: {e}")),
        };
        let fs = match rustix::fs::statvfs(&self.data) {
            Ok(s) => s,
            Err(e) => return Report::new(Status::Critical, format!("cannot read the filesystem: {e}")),
        };
        let total = (fs.f_blocks as f64) * (fs.f_frsize as f64);
        let free = (fs.f_bavail as f64) * (fs.f_frsize as f64);
        let free_pct = if total > 0.0 { 100.0 * free / total } else { 0.0 };
        let t = &self.t;
        // Less free space is worse: compare the used share against the thresholds' complements.
        let used_pct = 100.0 - free_pct;
        let status =
            Status::from_thresholds(used_pct, Some(100.0 - t.warn_free_percent), Some(100.0 - t.critical_free_percent))
                .max(Status::from_thresholds(wal_bytes, Some(t.warn_wal_bytes), t.critical_wal_bytes));
        let mut summary = format!(
            "{free_pct:.1}% of the disk free, database {:.1} MiB, WAL {:.1} MiB",
            db_bytes / 1048576.0,
            wal_bytes / 1048576.0
        );
        let mut wal_measurements = Vec::new();
        let mut status = status;
        if let Some(wal) = self.store.writer_stats().wal {
            let age = (chrono::Utc::now().timestamp_millis() - wal.last_complete_ms).max(0) as f64 / 1000.0;
            let age_status = Status::from_thresholds(
                age,
                Some(t.warn_checkpoint_age_seconds),
                Some(t.critical_checkpoint_age_seconds),
            );
            status = status.max(age_status);
            if wal.above_bound() {
                status = status.max(Status::Warn);
                summary.push_str(&format!(", above its bound of {:.0} MiB", wal.limit_bytes as f64 / 1048576.0));
            }
            summary.push_str(&format!(", last complete checkpoint {age:.0} s ago"));
            wal_measurements = vec![
                ("wal_limit_bytes", wal.limit_bytes as f64),
                ("wal_checkpoint_age_seconds", age),
                ("wal_restarts", wal.restarts as f64),
            ];
        }
        wal_measurements.into_iter().fold(
            Report::new(status, summary)
                .with("free_bytes", free)
                .with("free_percent", free_pct)
                .with("database_bytes", db_bytes)
                .with("wal_bytes", wal_bytes),
            |r, (name, value)| r.with(name, value),
        )
    }
}

struct Certificates {
    n: Named,
    t: CertificateThresholds,
    files: Vec<(String, PathBuf)>,
    crl: Option<PathBuf>,
}

/// Age in days of a CRL (`this_update`) and days until its `next_update`.
fn crl_times(path: &Path) -> Result<(f64, Option<f64>), String> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let der = if bytes.starts_with(b"-----") {
        rustls::pki_types::CertificateRevocationListDer::from_pem_slice(&bytes)
            .map_err(|e| e.to_string())?
            .as_ref()
            .to_vec()
    } else {
        bytes
    };
    let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    let age = (now - crl.last_update().timestamp()) as f64 / 86_400.0;
    let left = crl.next_update().map(|t| (t.timestamp() - now) as f64 / 86_400.0);
    Ok((age, left))
}

fn not_after(path: &Path) -> Result<i64, String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(path).map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp())
}

#[async_trait]
impl Check for Certificates {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Certificates.as_str()
    }
    async fn run(&self) -> Report {
        let t = &self.t;
        let now = chrono::Utc::now().timestamp();
        let mut worst = Status::Ok;
        let mut soonest: Option<(f64, String)> = None;
        let mut notes = Vec::new();
        for (label, path) in &self.files {
            let days = match not_after(path) {
                Ok(ts) => (ts - now) as f64 / 86_400.0,
                Err(e) => {
                    notes.push(format!("{label}: unreadable ({e})"));
                    worst = Status::Critical;
                    continue;
                }
            };
            // Fewer days left is worse.
            let s = if days <= t.critical_days {
                Status::Critical
            } else if days <= t.warn_days {
                Status::Warn
            } else {
                Status::Ok
            };
            if s > Status::Ok {
                notes.push(format!("{label} expires in {days:.0} days"));
            }
            worst = worst.max(s);
            if soonest.as_ref().is_none_or(|(d, _)| days < *d) {
                soonest = Some((days, label.clone()));
            }
        }
        let mut crl_age = None;
        if let Some(path) = &self.crl {
            match crl_times(path) {
                Ok((age, left)) => {
                    crl_age = Some(age);
                    if left.is_some_and(|l| l < 0.0) {
                        notes.push("the CRL is past its next update".into());
                        worst = Status::Critical;
                    } else if age > t.warn_crl_age_days {
                        notes.push(format!("the CRL is {age:.0} days old"));
                        worst = worst.max(Status::Warn);
                    }
                }
                Err(e) => {
                    notes.push(format!("the CRL is unreadable ({e})"));
                    worst = Status::Critical;
                }
            }
        }
        let summary = if notes.is_empty() {
            match &soonest {
                Some((d, l)) => {
                    format!("{} certificates valid; the first to expire is {l}, in {d:.0} days", self.files.len())
                }
                None => "no certificates to check".to_owned(),
            }
        } else {
            notes.join("; ")
        };
        let report = Report::new(worst, summary)
            .with("certificates", self.files.len() as f64)
            .with("min_days_left", soonest.map_or(0.0, |s| s.0));
        match crl_age {
            Some(age) => report.with("crl_age_days", age),
            None => report,
        }
    }
}

struct Backup {
    n: Named,
    data: PathBuf,
    dir: PathBuf,
    keep: usize,
}

#[async_trait]
impl Check for Backup {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Backup.as_str()
    }
    async fn run(&self) -> Report {
        let (data, dir, keep) = (self.data.clone(), self.dir.clone(), self.keep);
        let result = tokio::task::spawn_blocking(move || -> Result<(crate::store::backup::Report, usize), String> {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
            let file = dir.join(format!("hub-{stamp}.backup"));
            let report = crate::store::backup::backup(&data, &file, &mut |_, _| {}).map_err(|e| e.to_string())?;
            // Retention only after a good new backup: never delete the last good one first.
            let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("hub-") && n.ends_with(".backup"))
                })
                .collect();
            old.sort();
            let excess = old.len().saturating_sub(keep);
            for p in &old[..excess] {
                let _ = std::fs::remove_file(p);
            }
            Ok((report, excess))
        })
        .await;
        match result {
            Ok(Ok((r, removed))) => match &r.chain {
                Ok(head) => Report::new(
                    Status::Ok,
                    format!(
                        "backup of {:.1} MiB written, audit head seq {}; {removed} old backup(s) removed",
                        r.bytes as f64 / 1048576.0,
                        head.head_seq
                    ),
                )
                .with("bytes", r.bytes as f64)
                .with("audit_head_seq", head.head_seq as f64),
                Err(b) => Report::new(Status::Critical, format!("backup written, but its {b}")),
            },
            Ok(Err(e)) => Report::new(Status::Critical, format!("backup failed: {e}")),
            Err(e) => Report::new(Status::Critical, format!("backup task failed: {e}")),
        }
    }
}

struct Synthetic {
    n: Named,
    t: SyntheticThresholds,
    store: Arc<dyn Store>,
    delivery: Arc<Delivery>,
    exchange: Arc<crate::exchange::Exchange>,
}

#[async_trait]
impl Check for Synthetic {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Synthetic.as_str()
    }
    async fn run(&self) -> Report {
        use crate::delivery::{PROBE_SUBSCRIPTION, PROBE_TYPE};
        use sha2::Digest;
        let t = &self.t;
        let key = format!("probe-{}-{:08x}", chrono::Utc::now().timestamp_millis(), rand::random::<u32>());
        let payload = serde_json::json!({ "probe": key, "sent_at": chrono::Utc::now().to_rfc3339() });
        let canonical = serde_jcs::to_string(&payload).unwrap_or_default();
        let event = crate::store::event_id(PROBE_SUBSCRIPTION, PROBE_TYPE, &key, 1);
        let waiter = self.delivery.expect_probe(&event);
        let started = std::time::Instant::now();
        let version = crate::store::NewVersion {
            record_type: PROBE_TYPE.into(),
            key: key.clone(),
            schema_version: 1,
            digest: hex::encode(sha2::Sha256::digest(canonical.as_bytes())),
            canonical,
            publisher: "hub".into(),
            subjects: Vec::new(),
            idempotency: None,
            routes: vec![PROBE_SUBSCRIPTION.into()],
            audit: crate::ledger::NewEntry {
                record_type: Some(PROBE_TYPE.into()),
                record_key: Some(key),
                ..crate::ledger::NewEntry::new("hub", crate::ledger::Action::Publish, "ok")
            },
        };
        // The probe is the hub's own record, of a type outside the catalogue, with its one route.
        match self.exchange.commit(vec![version]).await.map(|mut v| v.pop()) {
            Ok(Some(Ok(crate::store::Published::Created(_)))) => {}
            Ok(Some(Err(e))) | Err(e) => {
                return Report::new(Status::Critical, format!("the probe could not be published: {e}"))
            }
            _ => return Report::new(Status::Critical, "the probe could not be published"),
        }
        let limit = Duration::from_millis(t.critical_ms as u64 * 3);
        let arrived = async {
            tokio::select! {
                here = waiter => here.is_ok(),
                elsewhere = self.delivered_by_another_node(&event) => elsewhere,
            }
        };
        match tokio::time::timeout(limit, arrived).await {
            Ok(true) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let status = Status::from_thresholds(ms, Some(t.warn_ms), Some(t.critical_ms));
                Report::new(status, format!("probe published and delivered end to end in {ms:.1} ms"))
                    .with("latency_ms", ms)
            }
            _ => Report::new(Status::Critical, format!("the probe did not arrive within {} s", limit.as_secs())),
        }
    }
}

impl Synthetic {
    /// On a shared store another node's worker may take the probe and deliver it to that node's
    /// own receiver: then the store says it was delivered. True once delivered, false if it went
    /// to the dead letters; never ends on a store of one node, where the receiver here answers.
    async fn delivered_by_another_node(&self, event: &str) -> bool {
        use crate::delivery::PROBE_SUBSCRIPTION;
        if !self.store.is_shared() {
            return std::future::pending().await;
        }
        let in_state = |state: &'static str| async move {
            self.store
                .deliveries(state, Some(PROBE_SUBSCRIPTION.into()), 10_000)
                .await
                .map(|rows| rows.iter().any(|r| r.event_id == event))
        };
        loop {
            // A probe is one row among few: a look costs little.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(false) = in_state("pending").await {
                return !in_state("dead").await.unwrap_or(false);
            }
        }
    }
}

/// The certificates a `certificates` check watches: CA, server, and every client certificate.
fn certificate_files(config: &Config, data: &Path) -> Vec<(String, PathBuf)> {
    let tls = crate::pki::TlsFiles::of(config, data);
    let mut files = vec![("ca".to_owned(), tls.ca), ("server".to_owned(), tls.cert)];
    let clients = data.join("pki").join("clients");
    if let Ok(dir) = std::fs::read_dir(&clients) {
        let mut names: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        names.sort();
        for p in names {
            let label = format!("client {}", p.file_stem().and_then(|s| s.to_str()).unwrap_or("?"));
            files.push((label, p));
        }
    }
    files
}

/// Builds the configured checks (the config is checked: kinds and schedules are valid).
pub fn build(
    config: &Config,
    store: Arc<dyn Store>,
    delivery: Arc<Delivery>,
    exchange: Arc<crate::exchange::Exchange>,
    inbound: Arc<crate::inbound::Inbounds>,
    data: &Path,
) -> Vec<Entry> {
    let mut out = Vec::new();
    for c in &config.checks {
        let Ok(schedule) = Schedule::parse(c.schedule.get_ref(), config.timezone()) else { continue };
        let Some(kind) = c.kind() else { continue };
        let n = Named { name: c.name.get_ref().clone() };
        let check: Arc<dyn Check> = match kind {
            CheckKind::AdapterReachability => {
                Arc::new(AdapterReachability { n, delivery: delivery.clone(), inbound: inbound.clone() })
            }
            CheckKind::DeliveryBacklog => Arc::new(DeliveryBacklog { n, t: c.thresholds(), store: store.clone() }),
            CheckKind::DeadLetters => Arc::new(DeadLetters { n, t: c.thresholds(), store: store.clone() }),
            CheckKind::AuditChain => Arc::new(AuditChain {
                n,
                store: store.clone(),
                full_every: c.full_every.as_ref().map_or(DEFAULT_FULL_EVERY, |n| *n.get_ref()),
                state: Default::default(),
            }),
            CheckKind::Storage => {
                Arc::new(Storage { n, t: c.thresholds(), data: data.to_path_buf(), store: store.clone() })
            }
            CheckKind::Certificates => Arc::new(Certificates {
                n,
                t: c.thresholds(),
                files: certificate_files(config, data),
                crl: crate::pki::TlsFiles::of(config, data).crl,
            }),
            CheckKind::Synthetic => Arc::new(Synthetic {
                n,
                t: c.thresholds(),
                store: store.clone(),
                delivery: delivery.clone(),
                exchange: exchange.clone(),
            }),
            CheckKind::Backup => {
                let Some(b) = &c.backup else { continue };
                Arc::new(Backup { n, data: data.to_path_buf(), dir: config.resolve(&b.dir), keep: b.keep as usize })
            }
        };
        out.push(Entry { check, schedule, timeout: Duration::from_secs(c.timeout_secs) });
    }
    out
}

/// Check history in the hub's store.
pub struct StoreHistory {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Days kept.
    pub days: u32,
}

#[async_trait]
impl History for StoreHistory {
    async fn record(&self, run: &Run) -> Result<(), String> {
        let keep_after = (chrono::Utc::now() - chrono::Duration::days(i64::from(self.days)))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let row = CheckRun {
            name: run.name.clone(),
            kind: run.kind.clone(),
            started: run.started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            duration_ms: run.duration_ms,
            status: run.report.status.as_str().to_owned(),
            summary: crate::mask::scrub(&run.report.summary),
            measurements: serde_json::to_value(&run.report.measurements).unwrap_or_default(),
            trigger: run.trigger.as_str().to_owned(),
        };
        self.store.record_check(row, keep_after).await.map_err(|e| e.to_string())
    }

    async fn last_started(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
        let last = self.store.last_check_started(name).await.map_err(|e| e.to_string())?;
        Ok(last.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&chrono::Utc)))
    }

    async fn claim(&self, name: &str, slot: Option<chrono::DateTime<chrono::Utc>>) -> Result<bool, String> {
        let slot =
            slot.map_or_else(|| "first-run".to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        self.store.claim_slot(name, &slot).await.map_err(|e| e.to_string())
    }
}

/// Raises alerts on status changes (flap-suppressed): into the log, the alert log in the store,
/// and, when `[ops].alert_url` is set, the vendor's ticketing webhook as Standard Webhooks signed
/// JSON. One queue delivers them in order, retrying each with backoff.
pub struct Alerting {
    state: std::sync::Mutex<ops::alert::Alerts>,
    store: Arc<dyn Store>,
    queue: Option<tokio::sync::mpsc::UnboundedSender<(i64, Vec<u8>)>>,
}

/// How alert deliveries are retried.
const ALERT_RETRY: crate::config::DeliverySection = crate::config::DeliverySection {
    max_attempts: 20,
    max_age_hours: 72,
    backoff_initial_ms: 1000,
    backoff_max_ms: 300_000,
    concurrency: 1,
    attempt_timeout_secs: 30,
    lease_secs: None,
    poll_ms: 1000,
};

impl Alerting {
    /// Alerts into the store and, with a sink, to the vendor. Spawns the delivery task.
    pub fn new(store: Arc<dyn Store>, sink: Option<adapters::webhook::WebhookSink>, hub: String) -> Self {
        let queue = sink.map(|sink| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Vec<u8>)>();
            let store = store.clone();
            tokio::spawn(async move {
                while let Some((id, body)) = rx.recv().await {
                    let webhook_id = format!("alert_{hub}_{id}");
                    for attempt in 1..=ALERT_RETRY.max_attempts {
                        let outcome = sink.send(&webhook_id, "application/json", body.clone()).await;
                        let (error, retry_after) = match outcome {
                            adapters::Outcome::Delivered => (None, None),
                            adapters::Outcome::Retry { reason, retry_after } => (Some(reason), Some(retry_after)),
                            adapters::Outcome::Reject { reason } | adapters::Outcome::Gone { reason } => (Some(reason), None),
                        };
                        if let Err(e) = store.alert_attempt(id, error.clone()).await {
                            tracing::error!(alert = id, error = %e, "cannot record the alert delivery");
                        }
                        match (error, retry_after) {
                            (None, _) => break,
                            (Some(reason), Some(after)) if attempt < ALERT_RETRY.max_attempts => {
                                tracing::warn!(alert = id, attempt, reason = %reason, "alert not delivered; retrying");
                                tokio::time::sleep(crate::delivery::backoff(&ALERT_RETRY, attempt, after)).await;
                            }
                            (Some(reason), _) => {
                                tracing::error!(alert = id, reason = %reason, "alert could not be delivered to the vendor");
                                break;
                            }
                        }
                    }
                }
            });
            tx
        });
        Self { state: std::sync::Mutex::new(ops::alert::Alerts::new(10, 4)), store, queue }
    }
}

#[async_trait]
impl Observer for Alerting {
    async fn finished(&self, run: &Run) {
        let alert = self.state.lock().unwrap_or_else(|e| e.into_inner()).observe(run);
        let Some(a) = alert else { return };
        let summary = crate::mask::scrub(&a.summary);
        match a.to {
            Status::Ok => {
                tracing::info!(check = %a.check, from = a.from.as_str(), to = "ok", flapping = a.flapping, summary = %summary, "check recovered")
            }
            _ => {
                tracing::error!(check = %a.check, from = a.from.as_str(), to = a.to.as_str(), flapping = a.flapping, summary = %summary, "check alert")
            }
        }
        let time = a.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let record = crate::store::AlertRecord {
            id: 0,
            check: a.check.clone(),
            from: a.from.as_str().to_owned(),
            to: a.to.as_str().to_owned(),
            summary: summary.clone(),
            time: time.clone(),
            flapping: a.flapping,
            delivered_at: None,
            attempts: 0,
            last_error: None,
        };
        let id = match self.store.record_alert(record).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(check = %a.check, error = %e, "cannot record the alert");
                return;
            }
        };
        if let Some(q) = &self.queue {
            let body = serde_json::json!({
                "id": id, "check": a.check, "kind": a.kind, "old_status": a.from, "new_status": a.to,
                "summary": summary, "time": time, "flapping": a.flapping,
            });
            let _ = q.send((id, body.to_string().into_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::keys::HubKeys;
    use crate::store::sqlite::{db_path, SqliteOptions, SqliteStore};
    use crate::store::wal::tests::version;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn storage_warns_above_the_wal_bound_and_goes_critical_while_no_checkpoint_completes() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(HubKeys::load_or_create(dir.path()).unwrap());
        let opts = SqliteOptions {
            group_commit_max: 128,
            read_connections: 1,
            checkpoint_every: 1000,
            max_wal_bytes: 1 << 20,
        };
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), keys, opts).unwrap());
        // The disk's own free space must not decide these runs.
        let disk_aside = StorageThresholds { warn_free_percent: 0.0, critical_free_percent: 0.0, ..Default::default() };
        let check = |t: StorageThresholds| Storage {
            n: Named { name: "disk".into() },
            t,
            data: dir.path().to_path_buf(),
            store: store.clone(),
        };
        let publish = |from: usize| {
            let store = store.clone();
            async move { store.publish((from..from + 100).map(version).collect()).await.unwrap() }
        };
        publish(0).await;
        let calm = check(disk_aside.clone()).run().await;
        assert_eq!(calm.status, Status::Ok, "{}", calm.summary);

        // A reader holds a snapshot: the log cannot start over, and no checkpoint completes.
        let reader = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        reader.query_row("SELECT count(*) FROM audit", [], |r| r.get::<_, i64>(0)).unwrap();
        let mut next = 100;
        // Two held-up tries are at least 250 ms apart (the writer's back-off).
        while store.writer_stats().wal.unwrap().held_up < 2 {
            assert!(next < 100_000, "no restart was held up");
            publish(next).await;
            next += 100;
        }
        let warned = check(disk_aside.clone()).run().await;
        assert_eq!(warned.status, Status::Warn, "{}", warned.summary);
        assert!(warned.summary.contains("above its bound of 1 MiB"), "{}", warned.summary);
        let stalled = check(StorageThresholds { critical_checkpoint_age_seconds: 0.2, ..disk_aside }).run().await;
        assert_eq!(stalled.status, Status::Critical, "{}", stalled.summary);
        assert!(stalled.measurements["wal_checkpoint_age_seconds"] >= 0.2, "{:?}", stalled.measurements);
        reader.execute_batch("COMMIT").unwrap();
        store.close().await;
    }
}
