//! How long a worker waits before it tries a receiver again.

use std::time::Duration;

use crate::config::DeliverySection;

/// Exponential backoff with full jitter in [d/2, d], at least the receiver's `Retry-After`,
/// never beyond the cap.
pub fn backoff(policy: &DeliverySection, failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = policy.backoff_initial_ms.saturating_mul(1u64 << exp).min(policy.backoff_max_ms);
    let jittered = rand::Rng::gen_range(&mut rand::thread_rng(), base / 2..=base.max(1));
    let ms = jittered.max(retry_after.map_or(0, |d| d.as_millis() as u64)).min(policy.backoff_max_ms);
    Duration::from_millis(ms)
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
