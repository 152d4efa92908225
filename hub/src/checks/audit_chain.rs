//! `audit_chain`: the tamper-evident chain verifies, in full passes and incremental ones.

use std::sync::Arc;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::config::checks::CheckKind;
use crate::store::Store;

pub(super) const DEFAULT_FULL_EVERY: u32 = 24;

/// Full passes re-read every entry; the ones between resume from the last signed checkpoint a pass
/// found intact, so an hourly check costs what was written in the hour, not the whole history.
/// The anchor lives in memory: after a restart the first run is a full pass.
pub(super) struct AuditChain {
    pub(super) n: Named,
    pub(super) store: Arc<dyn Store>,
    pub(super) full_every: u32,
    pub(super) state: tokio::sync::Mutex<ChainState>,
}

#[derive(Default)]
pub(super) struct ChainState {
    pub(super) anchor: Option<crate::ledger::Anchor>,
    pub(super) since_full: u32,
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
                        "{pass}: {} entries verified up to seq {}, {} signed checkpoints ({})",
                        r.entries, r.head_seq, r.checkpoints, r.suite
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
