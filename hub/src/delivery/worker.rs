//! One push subscription's worker: claims due entries under a lease, hands them to attempts
//! (several at once, batched for adapters that take many), slows to one probe while the receiver
//! fails, expires what is too old, and sleeps until it is woken or something falls due.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Delivery, Subscription};
use crate::ledger::{Action, NewEntry};
use crate::store::{Lease, OutboxRow};

/// What one attempt means for the worker's pacing.
pub(super) enum Verdict {
    /// The receiver took everything: the worker runs at full width again.
    Delivered,
    /// Wait this long before the next claim.
    Retry(Duration),
    /// Settled without news of the receiver (dead letters, nothing to send).
    Settled,
}

impl Verdict {
    /// The pacing of two outcomes of one attempt: a retry (the longer one) wins, so trouble
    /// recording one entry pauses the worker even when the others settled.
    pub(super) fn or(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Retry(a), Verdict::Retry(b)) => Verdict::Retry(a.max(b)),
            (r @ Verdict::Retry(_), _) | (_, r @ Verdict::Retry(_)) => r,
            (Verdict::Delivered, _) | (_, Verdict::Delivered) => Verdict::Delivered,
            _ => Verdict::Settled,
        }
    }
}

impl Delivery {
    /// The worker of `sub`, until `shutdown` turns true and its attempts in flight have settled.
    pub(super) async fn run(self: Arc<Self>, sub: Arc<Subscription>, mut shutdown: watch::Receiver<bool>) {
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
            if sub.settle_failed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                paused_until = Some(now + super::attempt::STORE_PAUSE);
            }
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
                                let verdict = engine.attempt(&sub, batch).await;
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
        sub.settling.close();
        if tokio::time::timeout(grace, sub.settling.wait()).await.is_err() {
            tracing::warn!(subscription = %sub.name, "settlements still unrecorded at shutdown; those entries go again");
        }
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
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
