//! The pull feed: the department fetches its events from the hub's API
//! (`GET /v1/feeds/{subscription}`, long poll) and acknowledges them. The hub serves the feed; this
//! kind only carries its settings, so a feed subscription is configured like any other.

use serde::Deserialize;

use crate::{AdapterError, Direction, Kind};

/// `[subscriptions.settings]` of a feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Most events one poll returns (the caller's `limit` is capped to it).
    #[serde(default = "default_max")]
    pub max_events: u32,
    /// Longest long-poll wait, in seconds (the caller's `wait` is capped to it).
    #[serde(default = "default_wait")]
    pub max_wait_secs: u64,
}

fn default_max() -> u32 {
    500
}
fn default_wait() -> u64 {
    30
}

impl FeedConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), AdapterError> {
        if self.max_events == 0 || self.max_events > 10_000 {
            return Err(AdapterError::Config("max_events must be 1 to 10000".into()));
        }
        if self.max_wait_secs > 300 {
            return Err(AdapterError::Config("max_wait_secs must be at most 300".into()));
        }
        Ok(())
    }
}

/// The registry entry.
pub fn kind() -> Kind {
    Kind {
        name: "feed",
        direction: Direction::Pull,
        description: "the department pulls events from GET /v1/feeds/{subscription} and acknowledges them",
        validate: |t| crate::settings::<FeedConfig>(t)?.validate(),
        build: None,
        validate_inbound: None,
        build_inbound: None,
    }
}
