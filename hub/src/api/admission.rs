//! Admission control: the global in-flight limit (tower's load shedding over a shared concurrency
//! limit, answered 503) and each department's request rate (GCRA via governor, answered 429),
//! both with `Retry-After`, decided before any work is done for the request.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::response::IntoResponse;
use axum::Router;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, ServiceBuilder};

use super::Problem;
use crate::config::Config;
use crate::metrics::{Metrics, ShedLabels};

/// Per-department budgets from `[[departments]] rate_limit`; departments without one are not limited.
pub struct RateLimits {
    by_id: HashMap<String, DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

impl RateLimits {
    /// One limiter per department that has a `rate_limit`.
    pub fn new(config: &Config) -> Self {
        let by_id = config
            .departments
            .iter()
            .filter_map(|d| {
                let limit = d.rate_limit.as_ref()?.get_ref();
                let rate = NonZeroU32::new(limit.per_second)?;
                let burst = limit.burst.and_then(NonZeroU32::new).unwrap_or(rate);
                Some((d.id.get_ref().clone(), RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))))
            })
            .collect();
        Self { by_id, clock: DefaultClock::default() }
    }

    /// `Err(wait)` when `principal` is over its budget: how long until one more request fits.
    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        match self.by_id.get(principal) {
            Some(limiter) => limiter.check().map_err(|not_until| not_until.wait_time_from(self.clock.now())),
            None => Ok(()),
        }
    }
}

/// Wraps every route of `router` so that requests past `max_in_flight` are shed: one that would
/// have to wait for a slot is answered 503 at once, so admitted requests keep their latency and
/// memory stays bounded by the limit rather than by the number of callers.
pub fn shed<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    max_in_flight: usize,
    metrics: Arc<Metrics>,
) -> Router<S> {
    let overloaded = move |err: BoxError| {
        let resp = if err.is::<tower::load_shed::error::Overloaded>() {
            metrics.shed.get_or_create(&ShedLabels { reason: "overloaded".into() }).inc();
            Problem::Overloaded.into_response()
        } else {
            Problem::Internal(err.to_string()).into_response()
        };
        std::future::ready(resp)
    };
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(overloaded))
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(max_in_flight)),
    )
}

/// Seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
