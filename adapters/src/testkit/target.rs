//! The outbound conformance suite for adapters whose receiver is not an HTTP endpoint (a folder,
//! an exchange table, a broker): what is `Delivered` is really there, in order, once per event id
//! where the target can enforce it; a batch arrives whole; a target that cannot be reached is
//! `Retry`, never `Delivered` or `Reject`; health says the same as a delivery would; a target that
//! can be read back for reconciliation says what it holds, notices an event lost and holds it
//! again once redelivered.

use async_trait::async_trait;

use super::envelope;
use crate::{Outbound, Outcome};

/// The department side of an outbound adapter under test.
#[async_trait]
pub trait OutboundTarget: Send + Sync {
    /// An adapter delivering to this target.
    fn adapter(&self) -> Box<dyn Outbound>;
    /// An adapter pointed at a target that is not there (a closed port, an unwritable folder).
    fn unreachable(&self) -> Box<dyn Outbound>;
    /// Event ids the department can read, in the order they arrived.
    async fn received(&self) -> Vec<String>;
    /// Whether the target drops a second copy of an event id (a table keyed on it, a file named
    /// after it). A broker does not: its consumers drop duplicates by `message-id`.
    fn dedupes(&self) -> bool;
    /// The department loses one event (a file removed, a row deleted). Only called on a target
    /// whose adapter answers `holdings`.
    async fn lose(&self, _id: &str) {}
}

/// Runs the suite against `target`, which must start empty.
pub async fn run_target_conformance(target: &dyn OutboundTarget) {
    let adapter = target.adapter();
    assert_eq!(adapter.health().await, Ok(()), "a reachable target is healthy");
    assert!(target.received().await.is_empty(), "the target starts empty");

    let one = envelope(1);
    assert_eq!(adapter.deliver(std::slice::from_ref(&one)).await, Outcome::Delivered);
    assert_eq!(target.received().await, [one.id()], "a delivered event is there");

    // The engine retries when an acknowledgement was lost: the target must not double it.
    assert_eq!(adapter.deliver(std::slice::from_ref(&one)).await, Outcome::Delivered);
    let got = target.received().await;
    if target.dedupes() {
        assert_eq!(got, [one.id()], "a redelivered event id is kept once");
    } else {
        assert_eq!(got, [one.id(), one.id()], "a redelivery carries the same id");
    }

    // A batch arrives whole and in order.
    let n = adapter.max_batch().clamp(1, 5) as u64;
    let batch: Vec<_> = (2..2 + n).map(envelope).collect();
    assert_eq!(adapter.deliver(&batch).await, Outcome::Delivered);
    let got = target.received().await;
    let tail: Vec<&str> = got[got.len() - batch.len()..].iter().map(String::as_str).collect();
    let want: Vec<&str> = batch.iter().map(|e| e.id()).collect();
    assert_eq!(tail, want, "the batch arrived in order");

    let never = envelope(98);
    let mut asked: Vec<String> = std::iter::once(one.id()).chain(want.iter().copied()).map(str::to_owned).collect();
    asked.push(never.id().to_owned());
    if let Some(held) = adapter.holdings(&asked).await {
        let held = held.expect("the target can be read back");
        assert_eq!(held.held.len(), asked.len() - 1, "every delivered event is held: {held:?}");
        assert!(!held.held.contains(never.id()), "an event never delivered is not held");
        target.lose(one.id()).await;
        let after = adapter.holdings(&asked).await.expect("read back").expect("read back");
        assert!(!after.held.contains(one.id()), "a lost event is not held: {after:?}");
        assert_eq!(after.held.len(), asked.len() - 2, "the others still are");
        assert_eq!(adapter.deliver(std::slice::from_ref(&one)).await, Outcome::Delivered);
        let again = adapter.holdings(&asked).await.expect("read back").expect("read back");
        assert!(again.held.contains(one.id()), "a redelivered event is held again");
    }

    let gone = target.unreachable();
    assert!(gone.health().await.is_err(), "an unreachable target is unhealthy");
    match gone.deliver(&[envelope(99)]).await {
        Outcome::Retry { .. } => {}
        other => panic!("an unreachable target gave {other:?}, not Retry"),
    }
    assert!(!target.received().await.iter().any(|id| id == envelope(99).id()));
}
