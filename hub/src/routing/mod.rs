//! Routing of new record versions to subscriptions.
pub mod filter;
