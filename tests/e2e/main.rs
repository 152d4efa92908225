//! The end-to-end suites as one test binary: each module is one suite (real HTTPS with the hub's
//! own certificates, the real `hub` binary, real files and servers). One binary links the hub
//! once instead of once per suite; `cargo test --release --test e2e -- delivery::` runs one.

mod bench;
mod cases;
mod cli;
mod cluster;
mod corrections;
mod crypto_suite;
mod delivery;
mod durability;
mod exchange;
mod failover;
mod front_end_exchange;
mod ops;
mod reconciliation;
mod refusals;
mod reliability_audit_fail_closed;
mod reliability_crash;
mod reliability_disk_full;
mod reliability_overload;
mod reliability_shutdown;
mod schemas;
mod security_hostile_input;
mod security_matrix;
mod security_tls;
mod services;
mod store_conformance;
mod telemetry;
mod upgrade;
