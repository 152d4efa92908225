//! `adapter_reachability`: every push receiver and inbound source answers a health call like a
//! delivery or a read would reach it.

use std::sync::Arc;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::config::checks::CheckKind;
use crate::delivery::Delivery;

pub(super) struct AdapterReachability {
    pub(super) n: Named,
    pub(super) delivery: Arc<Delivery>,
    pub(super) inbound: Arc<crate::inbound::Inbounds>,
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
