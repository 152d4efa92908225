//! Routing: which subscriptions a new record version goes to. A subscription takes a record type
//! and, optionally, a jq filter over the record; the table is built once from the checked config.
//! `jq` holds the compiled jq programs, used for these filters and for the field mappings of
//! subscriptions and inbound connections.
pub mod jq;

use serde_json::Value;

use jq::JqProgram;

/// One subscription's route.
struct Route {
    subscription: String,
    record_type: String,
    filter: Option<JqProgram>,
}

/// Every subscription's route, in config order.
pub struct Routing {
    routes: Vec<Route>,
}

impl Routing {
    /// The routes of the config's subscriptions (filters compiled; the config check has refused
    /// any that do not compile).
    pub fn build(config: &crate::config::Config) -> Self {
        let routes = config
            .subscriptions
            .iter()
            .map(|s| Route {
                subscription: s.name.get_ref().clone(),
                record_type: s.record_type.get_ref().clone(),
                filter: s.filter.as_ref().and_then(|f| JqProgram::compile(f.get_ref()).ok()),
            })
            .collect();
        Self { routes }
    }

    /// The subscriptions a new version of `record_type` goes to. A filter that fails on a record
    /// does not route it (and says so in the log, without the record).
    pub fn routes(&self, record_type: &str, doc: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.routes.iter().filter(|r| r.record_type == record_type) {
            let pass = match &r.filter {
                None => true,
                Some(f) => f.matches(doc).unwrap_or_else(|e| {
                    tracing::warn!(subscription = %r.subscription, error = %e, "subscription filter failed; record not routed there");
                    false
                }),
            };
            if pass {
                out.push(r.subscription.clone());
            }
        }
        out
    }
}
