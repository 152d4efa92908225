//! The hub's own sections: `[hub]`, `[server]`, `[tls]`, `[storage]` and `[audit]`, with their
//! defaults.

use serde::Deserialize;
use toml::Spanned;

/// `[hub]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// Short machine name, used in CloudEvents sources and certificate names.
    pub name: Spanned<String>,
    /// Human name shown to operators.
    #[serde(default)]
    pub display_name: Option<String>,
    /// IANA time zone for grant expiry, schedules and reports.
    #[serde(default = "default_timezone")]
    pub timezone: Spanned<String>,
}

fn default_timezone() -> Spanned<String> {
    Spanned::new(0..0, "Asia/Shanghai".to_owned())
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address of the HTTPS listener.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// Largest accepted body of one record, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest accepted NDJSON batch body, in bytes.
    #[serde(default = "default_max_batch_body")]
    pub max_batch_bytes: usize,
    /// How much of a body the hub will not use (a refused request's) it reads and drops, so that
    /// the refusal reaches clients that write the whole body before reading the answer; a body
    /// declared larger is not read and its connection is closed after the answer.
    #[serde(default = "default_discard_body")]
    pub discard_body_bytes: usize,
    /// Most lines in one batch.
    #[serde(default = "default_max_batch_lines")]
    pub max_batch_lines: usize,
    /// Whole-request deadline, in seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Deadline for a TLS handshake, in seconds: idle sockets must not hold a slot.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Deadline for a request's headers, in seconds: a byte-at-a-time client is cut off.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Requests handled at once; the rest are shed at once with 503 and `Retry-After`, so the
    /// admitted ones keep their latency instead of everyone queueing behind the writer.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Open connections at once; past it new connections are closed on accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a SIGTERM waits for in-flight requests and deliveries before the hub exits.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8443".to_owned())
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_max_batch_body() -> usize {
    16 * 1024 * 1024
}
/// Twice the largest body accepted by default: a batch just over its limit is still answered.
fn default_discard_body() -> usize {
    2 * default_max_batch_body()
}
fn default_max_batch_lines() -> usize {
    10_000
}
fn default_request_timeout() -> u64 {
    30
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_header_timeout() -> u64 {
    15
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_max_connections() -> usize {
    4096
}
fn default_shutdown_grace() -> u64 {
    30
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            max_batch_bytes: default_max_batch_body(),
            discard_body_bytes: default_discard_body(),
            max_batch_lines: default_max_batch_lines(),
            request_timeout_secs: default_request_timeout(),
            handshake_timeout_secs: default_handshake_timeout(),
            header_timeout_secs: default_header_timeout(),
            max_in_flight: default_max_in_flight(),
            max_connections: default_max_connections(),
            shutdown_grace_secs: default_shutdown_grace(),
        }
    }
}

/// `[tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Create a development CA and certificates under `DATA/pki/` when they are missing.
    #[serde(default = "yes")]
    pub dev_pki: bool,
    /// PEM file of the CA that signs client certificates (production).
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
    /// PEM certificate chain of the server (production).
    #[serde(default)]
    pub cert: Option<Spanned<String>>,
    /// PEM private key of the server (production).
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// PEM or DER certificate revocation list checked for client certificates.
    #[serde(default)]
    pub crl: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

impl Default for TlsSection {
    fn default() -> Self {
        Self { dev_pki: true, ca: None, cert: None, key: None, crl: None }
    }
}

/// Storage engines the hub can run on.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Embedded SQLite (WAL, synchronous=FULL): the default.
    #[default]
    Sqlite,
    /// A PostgreSQL database that several hub nodes may share (ops/deploy/cluster.md).
    Postgres,
}

/// `[storage]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Engine (default `sqlite`).
    #[serde(default)]
    pub engine: Option<Spanned<Engine>>,
    /// PostgreSQL: the environment variable holding the connection URL (credentials stay out of
    /// the config file).
    #[serde(default = "default_url_env")]
    pub url_env: String,
    /// PostgreSQL: connections this node keeps to the database.
    #[serde(default = "default_pg_connections")]
    pub max_connections: u32,
    /// Data directory (database, keys, development PKI); `--data` overrides it.
    #[serde(default = "default_data")]
    pub path: String,
    /// Read connections kept open.
    #[serde(default = "default_readers")]
    pub read_connections: usize,
    /// Most commits flushed together by one fsync.
    #[serde(default = "default_group")]
    pub group_commit_max: usize,
    /// SQLite: the write-ahead log's bound in MiB. Past it the writer makes a checkpoint complete
    /// and the log start over, so sustained load cannot fill the disk (ops/runbooks/storage.md).
    #[serde(default = "default_max_wal_mib")]
    pub max_wal_mib: Spanned<u64>,
}

fn default_data() -> String {
    "data".to_owned()
}
fn default_url_env() -> String {
    "HUB_DATABASE_URL".to_owned()
}
fn default_pg_connections() -> u32 {
    16
}

impl StorageSection {
    /// The engine in use.
    pub fn engine(&self) -> Engine {
        self.engine.as_ref().map_or(Engine::Sqlite, |e| *e.get_ref())
    }
}
fn default_readers() -> usize {
    4
}
fn default_group() -> usize {
    512
}
fn default_max_wal_mib() -> Spanned<u64> {
    Spanned::new(0..0, 256)
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            engine: None,
            url_env: default_url_env(),
            max_connections: default_pg_connections(),
            path: default_data(),
            read_connections: default_readers(),
            group_commit_max: default_group(),
            max_wal_mib: default_max_wal_mib(),
        }
    }
}

/// `[telemetry]`: traces of the record's way (receive, validate, commit, each delivery attempt)
/// exported over OTLP. Absent: no spans leave the hub, and a client's `traceparent` still travels
/// with its records into their deliveries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// The collector's OTLP/HTTP traces URL, used as written (`http://HOST:4318/v1/traces`);
    /// spans go as protobuf.
    pub otlp_endpoint: Spanned<String>,
    /// `service.name` of the hub's spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of traces the hub starts itself that are kept (0 to 1); a trace a client started
    /// follows the client's sampling decision.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: Spanned<f64>,
}

fn default_service_name() -> String {
    "conghua-hub".into()
}

fn default_sample_ratio() -> Spanned<f64> {
    Spanned::new(0..0, 1.0)
}

/// `[audit]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// A signed checkpoint every this many entries.
    #[serde(default = "default_checkpoint")]
    pub checkpoint_every: u64,
    /// The crypto suite of the chain, its subject hashes and signatures: `sha256-ed25519` or
    /// `sm3-sm2`. A data directory (or database) keeps the one it was made with.
    #[serde(default)]
    pub suite: crate::ledger::suite::Suite,
}

fn default_checkpoint() -> u64 {
    1000
}

impl Default for AuditSection {
    fn default() -> Self {
        Self { checkpoint_every: default_checkpoint(), suite: Default::default() }
    }
}
