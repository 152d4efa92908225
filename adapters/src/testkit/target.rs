//! The outbound conformance suite for adapters whose receiver is not an HTTP endpoint (a folder,
//! an exchange table, a broker): what is `Delivered` is really there, in order, once per event id
//! where the target can enforce it; a batch arrives whole; a target that cannot be reached is
//! `Retry`, never `Delivered` or `Reject`; health says the same as a delivery would.

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

    let gone = target.unreachable();
    assert!(gone.health().await.is_err(), "an unreachable target is unhealthy");
    match gone.deliver(&[envelope(99)]).await {
        Outcome::Retry { .. } => {}
        other => panic!("an unreachable target gave {other:?}, not Retry"),
    }
    assert!(!target.received().await.iter().any(|id| id == envelope(99).id()));
}
