//! The hub's health checks, implemented against `ops::check::Check`: one file per check kind
//! (receivers reachable, delivery backlog, dead letters, the audit chain, storage, certificates,
//! backup, the synthetic probe, notices, reconciliation), [`build`] as their one registry over `CheckKind`, and the store's
//! history and alerting the runner reports to. Summaries carry counts, durations and names of
//! subscriptions and certificates only, so ops and the data-blind vendor can both read them.

mod alerting;
mod audit_chain;
mod backlog;
mod backup;
mod certificates;
mod dead_letters;
mod history;
mod notices;
mod reachability;
mod reconciliation;
mod storage;
mod synthetic;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ops::check::Check;
use ops::runner::Entry;
use ops::schedule::Schedule;

pub use alerting::Alerting;
use audit_chain::{AuditChain, DEFAULT_FULL_EVERY};
use backlog::DeliveryBacklog;
use backup::Backup;
use certificates::{certificate_files, Certificates};
use dead_letters::DeadLetters;
pub use history::StoreHistory;
use reachability::AdapterReachability;
use storage::Storage;
use synthetic::Synthetic;

use crate::config::checks::CheckKind;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::store::Store;

struct Named {
    name: String,
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
            CheckKind::Notices => Arc::new(notices::Notices {
                n,
                t: c.thresholds(),
                store: store.clone(),
                feeds: config
                    .departments
                    .iter()
                    .map(|d| (d.id.get_ref().clone(), crate::delivery::notice_feed(d.id.get_ref())))
                    .collect(),
                catalog: exchange.catalog().clone(),
                tz: config.timezone(),
            }),
            CheckKind::Reconciliation => Arc::new(reconciliation::Reconciliation {
                n,
                t: c.thresholds(),
                store: store.clone(),
                delivery: delivery.clone(),
                tz: config.timezone(),
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
