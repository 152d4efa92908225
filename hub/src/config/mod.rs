//! The hub's TOML configuration: its shape (`deny_unknown_fields` everywhere), its defaults, and the
//! checks that need no I/O. Schema-dependent checks live in `catalog`, which reports problems in
//! the same `FILE:LINE: message` form so that `hub config check` lists every problem at once.

pub mod checks;
pub mod text;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::catalog::pointer::FieldPointer;

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// One or more problems, each with file and line.
    #[error("{}", problems_text(.0))]
    Invalid(Vec<Problem>),
}

fn problems_text(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n")
}

/// One configuration problem, located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in (the config or a schema it names).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Lowercase, without personal data.
    pub message: String,
}

impl ConfigError {
    /// Merges the problems of two checks into one error (or none).
    pub fn merge(a: Result<(), ConfigError>, b: Result<(), ConfigError>) -> Result<(), ConfigError> {
        match (a, b) {
            (Ok(()), other) | (other, Ok(())) => other,
            (Err(ConfigError::Invalid(mut x)), Err(ConfigError::Invalid(y))) => {
                x.extend(y);
                x.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
                Err(ConfigError::Invalid(x))
            }
            (Err(e), _) => Err(e),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Collects problems against one source text, turning byte spans into line numbers.
pub struct Problems<'a> {
    file: &'a Path,
    source: &'a str,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    /// Starts an empty list for `file` whose text is `source`.
    pub fn new(file: &'a Path, source: &'a str) -> Self {
        Self { file, source, list: Vec::new() }
    }

    /// Adds a problem at a byte span of the source.
    pub fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = line_of(self.source, span.start);
        self.list.push(Problem { file: self.file.to_path_buf(), line, message: message.into() });
    }

    /// Adds a problem located in another file (a schema).
    pub fn in_file(&mut self, file: &Path, line: usize, message: impl Into<String>) {
        self.list.push(Problem { file: file.to_path_buf(), line, message: message.into() });
    }

    /// Ends collection: `Ok` when nothing was found.
    pub fn finish(mut self) -> Result<(), ConfigError> {
        if self.list.is_empty() {
            Ok(())
        } else {
            self.list.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            Err(ConfigError::Invalid(self.list))
        }
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[hub]`: who this hub is.
    pub hub: HubSection,
    /// `[server]`: listener and limits.
    #[serde(default)]
    pub server: ServerSection,
    /// `[tls]`: certificates.
    #[serde(default)]
    pub tls: TlsSection,
    /// `[storage]`: where records and the audit chain live.
    #[serde(default)]
    pub storage: StorageSection,
    /// `[audit]`: the tamper-evident log.
    #[serde(default)]
    pub audit: AuditSection,
    /// `[[departments]]`: the systems that publish and read.
    #[serde(default)]
    pub departments: Vec<Department>,
    /// `[[operators]]`: people and portals with a role.
    #[serde(default)]
    pub operators: Vec<Operator>,
    /// `[[record_types]]`: what can be exchanged.
    #[serde(default)]
    pub record_types: Vec<RecordTypeConfig>,
    /// `[[grants]]`: who may read what, for which purposes, which fields.
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
    /// `[delivery]`: retry and concurrency policy of push subscriptions.
    #[serde(default)]
    pub delivery: DeliverySection,
    /// `[[subscriptions]]`: grants in push or feed mode.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// `[[inbound]]`: department systems the hub takes records from through an adapter.
    #[serde(default)]
    pub inbound: Vec<InboundConfig>,
    /// `[ops]`: check history.
    #[serde(default)]
    pub ops: OpsSection,
    /// `[[checks]]`: scheduled health checks.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    /// Where the file was read from; relative paths inside it resolve against its folder.
    #[serde(skip)]
    pub path: PathBuf,
    /// The file's text, kept to turn spans into line numbers.
    #[serde(skip)]
    pub source: String,
}

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

/// `[audit]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// A signed checkpoint every this many entries.
    #[serde(default = "default_checkpoint")]
    pub checkpoint_every: u64,
}

fn default_checkpoint() -> u64 {
    1000
}

impl Default for AuditSection {
    fn default() -> Self {
        Self { checkpoint_every: default_checkpoint() }
    }
}

/// `[[departments]]`: a department system, identified by certificate CN or bearer token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    /// Stable id (kebab-case); also the client certificate's CN.
    pub id: Spanned<String>,
    /// Display name (Chinese).
    pub name: String,
    /// English name.
    #[serde(default)]
    pub name_en: Option<String>,
    /// SHA-256 (hex) of a bearer token this department may use instead of a certificate.
    #[serde(default)]
    pub token_sha256: Option<Spanned<String>>,
    /// Requests per second this department may make (sustained); over it the hub answers 429
    /// with `Retry-After`, so one runaway system cannot starve the others.
    #[serde(default)]
    pub rate_limit: Option<Spanned<RateLimit>>,
}

/// A department's request budget (GCRA: `per_second` sustained, `burst` at once).
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after a quiet spell; defaults to `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Operator roles (CONTRACT.md: identity).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The city's ops team.
    Ops,
    /// The outsourced maintenance vendor: data-blind.
    Vendor,
    /// The supervision bureau.
    Auditor,
    /// The citizen portal (access log only).
    Portal,
}

impl Role {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ops => "ops",
            Role::Vendor => "vendor",
            Role::Auditor => "auditor",
            Role::Portal => "portal",
        }
    }
}

/// `[[operators]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// Stable id; also the client certificate's CN.
    pub id: Spanned<String>,
    /// Display name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 (hex) of a bearer token.
    #[serde(default)]
    pub token_sha256: Option<Spanned<String>>,
}

/// Sharing classes of the national government data-sharing rules (无条件/有条件/不予共享).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Any department may read every field, for a stated purpose.
    Unconditional,
    /// Only through grants, projected to the granted fields.
    Conditional,
    /// Only the owner; granting it is a configuration error.
    None,
}

impl Sharing {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Unconditional => "unconditional",
            Sharing::Conditional => "conditional",
            Sharing::None => "none",
        }
    }
}

/// `[[record_types]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordTypeConfig {
    /// Type id (kebab-case), used in URLs.
    pub id: Spanned<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The only department allowed to publish it.
    pub owner: Spanned<String>,
    /// Path of the JSON Schema (relative to this file), in a folder named `vN` for version N.
    pub schema: Spanned<String>,
    /// JSON pointer of the business key.
    pub key: Spanned<String>,
    /// JSON pointers (with `*` over arrays) of the resident IDs or credit codes it concerns.
    #[serde(default)]
    pub subjects: Vec<Spanned<String>>,
    /// Sharing class.
    pub sharing: Spanned<Sharing>,
}

/// `[[grants]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// Department that may read.
    pub department: Spanned<String>,
    /// Record type it may read.
    pub record_type: Spanned<String>,
    /// Purposes (kebab-case) it may state.
    pub purposes: Vec<Spanned<String>>,
    /// Field pointers it receives; everything else is removed.
    pub fields: Vec<Spanned<String>>,
    /// Last day (inclusive, hub time zone) the grant is valid.
    #[serde(default)]
    pub expires: Option<Spanned<String>>,
    /// The legal basis or agreement the grant rests on.
    #[serde(default)]
    pub basis: Option<String>,
}

/// `[delivery]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    /// Attempts before an event goes to the dead letters.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Age (hours) after which an undelivered event goes to the dead letters.
    #[serde(default = "default_max_age")]
    pub max_age_hours: u64,
    /// First retry delay (ms); it doubles per consecutive failure, with jitter.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay (ms).
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    /// Deliveries in flight per subscription.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Deadline of one attempt (s), on top of the adapter's own timeout.
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_secs: u64,
    /// How long a claimed entry stays this node's (s); longer than an attempt. Another node takes
    /// over the entries of a node that died once their lease runs out. Default: the attempt
    /// deadline plus 30 s.
    #[serde(default)]
    pub lease_secs: Option<u64>,
    /// On a shared (PostgreSQL) store, how often an idle worker looks for entries other nodes
    /// routed or left behind (ms).
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
}

impl DeliverySection {
    /// The lease of a claim.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_secs.unwrap_or(self.attempt_timeout_secs + 30))
    }
}

fn default_poll() -> u64 {
    1000
}

fn default_attempts() -> u32 {
    20
}
fn default_max_age() -> u64 {
    72
}
fn default_backoff_initial() -> u64 {
    1000
}
fn default_backoff_max() -> u64 {
    300_000
}
fn default_concurrency() -> usize {
    4
}
fn default_attempt_timeout() -> u64 {
    30
}

impl Default for DeliverySection {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            max_age_hours: default_max_age(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
            concurrency: default_concurrency(),
            attempt_timeout_secs: default_attempt_timeout(),
            lease_secs: None,
            poll_ms: default_poll(),
        }
    }
}

/// `[[subscriptions]]`: a department receives new versions of a record type for a purpose, through
/// an adapter. What it receives is projected exactly like a read for that purpose.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Stable name (kebab-case), used in URLs and metrics.
    pub name: Spanned<String>,
    /// The receiving department.
    pub department: Spanned<String>,
    /// The record type it receives.
    pub record_type: Spanned<String>,
    /// The purpose; the department needs a grant for it (or the type is shared unconditionally).
    pub purpose: Spanned<String>,
    /// Optional jq filter; the record is sent when its first output is truthy.
    #[serde(default)]
    pub filter: Option<Spanned<String>>,
    /// Adapter kind (`webhook`, `feed`, ...).
    pub adapter: Spanned<String>,
    /// The adapter's own settings (see its documentation).
    #[serde(default)]
    pub settings: Option<Spanned<toml::Table>>,
    /// Optional jq program from the record (projected to the grant) to the department's own
    /// shape, e.g. `{nsrsbh: .uscc, nsrmc: .name}` for State Tax's exchange table.
    #[serde(default)]
    pub mapping: Option<Spanned<String>>,
}

/// `[[inbound]]`: a department system the hub takes records from (a folder, a staging table,
/// a queue). Records arrive as the department publishing them, and only the owner of the record
/// type may have one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Stable name (kebab-case), used in idempotency keys, logs and metrics.
    pub name: Spanned<String>,
    /// The publishing department.
    pub department: Spanned<String>,
    /// The record type it publishes.
    pub record_type: Spanned<String>,
    /// Adapter kind (`file_drop`, `sql_table`, `amqp`).
    pub adapter: Spanned<String>,
    /// The adapter's inbound settings.
    #[serde(default)]
    pub settings: Option<Spanned<toml::Table>>,
    /// Optional jq program from the department's shape to the record type's.
    #[serde(default)]
    pub mapping: Option<Spanned<String>>,
    /// A sample record in the department's shape (a JSON file, relative to this config): at load
    /// the mapping runs on it and its output must validate against the record type's schema.
    #[serde(default)]
    pub mapping_example: Option<Spanned<String>>,
}

/// `[ops]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct OpsSection {
    /// Days of check history kept.
    #[serde(default = "default_retention")]
    pub history_days: u32,
    /// The vendor's ticketing webhook: alerts are POSTed there as Standard Webhooks signed JSON.
    #[serde(default)]
    pub alert_url: Option<Spanned<String>>,
    /// Environment variable holding the alert signing secret (`whsec_...`).
    #[serde(default)]
    pub alert_secret_env: Option<String>,
    /// A plain-HTTP loopback address serving only `/metrics`, for a local Prometheus.
    #[serde(default)]
    pub metrics_listen: Option<Spanned<String>>,
}

fn default_retention() -> u32 {
    400
}

impl Default for OpsSection {
    fn default() -> Self {
        Self { history_days: default_retention(), alert_url: None, alert_secret_env: None, metrics_listen: None }
    }
}

/// `[[checks]]`: one scheduled health check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Name (kebab-case), used in URLs and alerts.
    pub name: Spanned<String>,
    /// Kind (see `checks::CheckKind`).
    pub kind: Spanned<String>,
    /// Cron expression with seconds, in the hub's time zone.
    pub schedule: Spanned<String>,
    /// Deadline of one run (s).
    #[serde(default = "default_check_timeout")]
    pub timeout_secs: u64,
    /// Kind-specific thresholds (`warn_*`, `critical_*`), numbers; each kind's names are in
    /// `checks` and any other name is refused.
    #[serde(default)]
    pub thresholds: Option<Spanned<toml::Table>>,
    /// `backup` only: the folder backups go to (relative to this file) and how many to keep.
    #[serde(default)]
    pub backup: Option<BackupSettings>,
    /// `audit_chain` only: every Nth run re-verifies the whole chain; the runs between verify only
    /// what follows the last signed checkpoint found intact. 1 makes every run a full pass.
    #[serde(default)]
    pub full_every: Option<Spanned<u32>>,
}

impl CheckConfig {
    /// The kind (`None` only in a config that did not pass its check).
    pub fn kind(&self) -> Option<checks::CheckKind> {
        checks::CheckKind::parse(self.kind.get_ref())
    }

    /// The thresholds as the kind's type; a config that passed its check always has them.
    pub fn thresholds<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        self.thresholds.as_ref().and_then(|t| checks::thresholds(t.get_ref()).ok()).unwrap_or_default()
    }
}

/// Where a `backup` check writes, and its retention.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Destination folder (relative to the config file); another disk in production.
    pub dir: String,
    /// Backups kept; older ones are deleted after a successful new one.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_keep() -> u32 {
    7
}

fn default_check_timeout() -> u64 {
    60
}

/// True for lowercase words joined by single hyphens.
pub fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('-').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

impl Config {
    /// Reads and parses a file without the cross-checks (see [`Config::check`]).
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let source =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse_unchecked(path, source)
    }

    /// Parses text as if read from `path`, with the cross-checks.
    pub fn parse(path: &Path, source: String) -> Result<Config, ConfigError> {
        let config = Self::parse_unchecked(path, source)?;
        config.check()?;
        Ok(config)
    }

    fn parse_unchecked(path: &Path, source: String) -> Result<Config, ConfigError> {
        let mut config: Config = match toml::from_str(&source) {
            Ok(c) => c,
            Err(e) => {
                let line = e.span().map(|s| line_of(&source, s.start)).unwrap_or(1);
                let message = e.message().trim().replace('\n', " ");
                return Err(ConfigError::Invalid(vec![Problem { file: path.to_path_buf(), line, message }]));
            }
        };
        config.path = path.to_path_buf();
        config.source = source;
        Ok(config)
    }

    /// Resolves a path written in the config against the config's folder.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// The listen address (checked at load).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.server.listen.get_ref().parse().ok()
    }

    /// The hub's time zone (checked at load).
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.hub.timezone.get_ref().parse().unwrap_or(chrono_tz::Asia::Shanghai)
    }

    /// A department by id.
    pub fn department(&self, id: &str) -> Option<&Department> {
        self.departments.iter().find(|d| d.id.get_ref() == id)
    }

    /// A record type by id.
    pub fn record_type(&self, id: &str) -> Option<&RecordTypeConfig> {
        self.record_types.iter().find(|t| t.id.get_ref() == id)
    }

    /// Every check that needs no file but this one: names, references, pointer syntax, sharing.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new(&self.path, &self.source);
        if !is_kebab(self.hub.name.get_ref()) {
            p.at(self.hub.name.span(), "hub name must be kebab-case (a-z, 0-9, single hyphens)");
        }
        if self.hub.timezone.get_ref().parse::<chrono_tz::Tz>().is_err() {
            p.at(self.hub.timezone.span(), "timezone must be an IANA name such as Asia/Shanghai");
        }
        if self.server.listen.get_ref().parse::<SocketAddr>().is_err() {
            p.at(self.server.listen.span(), "listen must be an address such as 127.0.0.1:8443");
        }
        if self.storage.read_connections == 0 || self.storage.group_commit_max == 0 {
            p.at(0..0, "storage read_connections and group_commit_max must be at least 1");
        }
        if !(1..=1 << 20).contains(self.storage.max_wal_mib.get_ref()) {
            p.at(self.storage.max_wal_mib.span(), "max_wal_mib must be between 1 and 1048576 (MiB)");
        }
        if let Some(e) = &self.storage.engine {
            if *e.get_ref() == Engine::Postgres && (self.storage.url_env.is_empty() || self.storage.max_connections < 2)
            {
                p.at(
                    e.span(),
                    "postgres needs url_env (the variable holding its URL) and max_connections of at least 2",
                );
            }
        }
        if self.delivery.lease_secs.is_some_and(|l| l <= self.delivery.attempt_timeout_secs)
            || self.delivery.poll_ms == 0
        {
            p.at(0..0, "delivery lease_secs must be longer than attempt_timeout_secs, and poll_ms at least 1");
        }
        if self.audit.checkpoint_every == 0 {
            p.at(0..0, "audit checkpoint_every must be at least 1");
        }
        let sv = &self.server;
        if sv.max_in_flight == 0
            || sv.max_connections == 0
            || sv.header_timeout_secs == 0
            || sv.handshake_timeout_secs == 0
            || sv.request_timeout_secs == 0
        {
            p.at(0..0, "server max_in_flight, max_connections and every timeout must be at least 1");
        }
        for d in &self.departments {
            if let Some(r) = &d.rate_limit {
                if r.get_ref().per_second == 0 || r.get_ref().burst == Some(0) {
                    p.at(r.span(), "rate_limit per_second and burst must be at least 1");
                }
            }
        }
        if !self.tls.dev_pki {
            for (name, v) in [("ca", &self.tls.ca), ("cert", &self.tls.cert), ("key", &self.tls.key)] {
                if v.is_none() {
                    p.at(0..0, format!("tls {name} is required when dev_pki = false"));
                }
            }
        }
        for f in [&self.tls.ca, &self.tls.cert, &self.tls.key, &self.tls.crl].into_iter().flatten() {
            if !self.resolve(f.get_ref()).is_file() {
                p.at(f.span(), format!("tls file {} does not exist", f.get_ref()));
            }
        }

        let mut principals: Vec<&Spanned<String>> = Vec::new();
        let tokens = self
            .departments
            .iter()
            .map(|d| (&d.id, &d.token_sha256))
            .chain(self.operators.iter().map(|o| (&o.id, &o.token_sha256)));
        for (id, token) in tokens {
            if !is_kebab(id.get_ref()) {
                p.at(id.span(), format!("principal id {:?} must be kebab-case", id.get_ref()));
            }
            if principals.iter().any(|q| q.get_ref() == id.get_ref()) {
                p.at(id.span(), format!("principal id {:?} is defined twice", id.get_ref()));
            }
            principals.push(id);
            if let Some(t) = token {
                if t.get_ref().len() != 64 || !t.get_ref().bytes().all(|b| b.is_ascii_hexdigit()) {
                    p.at(t.span(), "token_sha256 must be 64 hex digits (the SHA-256 of the token)");
                }
            }
        }

        let mut seen_types: Vec<&str> = Vec::new();
        for t in &self.record_types {
            let id = t.id.get_ref();
            if !is_kebab(id) {
                p.at(t.id.span(), format!("record type id {id:?} must be kebab-case"));
            }
            if seen_types.contains(&id.as_str()) {
                p.at(t.id.span(), format!("record type {id:?} is defined twice"));
            }
            seen_types.push(id);
            if self.department(t.owner.get_ref()).is_none() {
                p.at(t.owner.span(), format!("owner {:?} is not a department", t.owner.get_ref()));
            }
            match FieldPointer::parse(t.key.get_ref()) {
                Ok(k) if k.has_wildcard() => p.at(t.key.span(), "key pointer cannot contain *"),
                Ok(_) => {}
                Err(e) => p.at(t.key.span(), format!("key: {e}")),
            }
            for s in &t.subjects {
                if let Err(e) = FieldPointer::parse(s.get_ref()) {
                    p.at(s.span(), format!("subject: {e}"));
                }
            }
        }

        for (i, g) in self.grants.iter().enumerate() {
            let dept = g.department.get_ref();
            if self.department(dept).is_none() {
                p.at(g.department.span(), format!("grant department {dept:?} is not a department"));
            }
            match self.record_type(g.record_type.get_ref()) {
                None => p.at(
                    g.record_type.span(),
                    format!("grant record_type {:?} is not a record type", g.record_type.get_ref()),
                ),
                Some(t) if *t.sharing.get_ref() == Sharing::None => p.at(
                    g.record_type.span(),
                    format!("record type {:?} has sharing = \"none\" and cannot be granted", t.id.get_ref()),
                ),
                Some(t) if t.owner.get_ref() == dept => {
                    p.at(g.department.span(), format!("{dept:?} owns {:?} and needs no grant for it", t.id.get_ref()))
                }
                Some(_) => {}
            }
            if g.purposes.is_empty() {
                p.at(g.department.span(), "a grant needs at least one purpose");
            }
            for purpose in &g.purposes {
                if !is_kebab(purpose.get_ref()) {
                    p.at(purpose.span(), format!("purpose {:?} must be kebab-case", purpose.get_ref()));
                }
                let clash = self.grants[..i].iter().any(|h| {
                    h.department.get_ref() == dept
                        && h.record_type.get_ref() == g.record_type.get_ref()
                        && h.purposes.iter().any(|q| q.get_ref() == purpose.get_ref())
                });
                if clash {
                    p.at(
                        purpose.span(),
                        format!("{dept:?} already has a grant on {:?} for this purpose", g.record_type.get_ref()),
                    );
                }
            }
            if g.fields.is_empty() {
                p.at(g.department.span(), "a grant needs at least one field");
            }
            for f in &g.fields {
                if let Err(e) = FieldPointer::parse(f.get_ref()) {
                    p.at(f.span(), format!("field: {e}"));
                }
            }
            if let Some(e) = &g.expires {
                if chrono::NaiveDate::parse_from_str(e.get_ref(), "%Y-%m-%d").is_err() {
                    p.at(e.span(), "expires must be a date YYYY-MM-DD");
                }
            }
        }
        if self.delivery.max_attempts == 0 || self.delivery.concurrency == 0 || self.delivery.attempt_timeout_secs == 0
        {
            p.at(0..0, "delivery max_attempts, concurrency and attempt_timeout_secs must be at least 1");
        }
        if self.delivery.backoff_initial_ms == 0 || self.delivery.backoff_max_ms < self.delivery.backoff_initial_ms {
            p.at(0..0, "delivery backoff_initial_ms must be at least 1 and at most backoff_max_ms");
        }
        for (i, sub) in self.subscriptions.iter().enumerate() {
            self.check_subscription(&mut p, i, sub);
        }
        for (i, c) in self.inbound.iter().enumerate() {
            self.check_inbound(&mut p, i, c);
        }
        if let Some(m) = &self.ops.metrics_listen {
            if !m.get_ref().parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback()) {
                p.at(m.span(), "metrics_listen must be a loopback address such as 127.0.0.1:9464 (it has no TLS)");
            }
        }
        if let Some(url) = &self.ops.alert_url {
            let settings = toml::toml! { url = (url.get_ref().clone()) secret_env = (self.ops.alert_secret_env.clone().unwrap_or_default()) };
            if let Err(e) = settings
                .try_into::<adapters::webhook::WebhookConfig>()
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate().map_err(|e| e.to_string()))
            {
                p.at(url.span(), format!("alert_url / alert_secret_env: {e}"));
            }
        }
        for (i, c) in self.checks.iter().enumerate() {
            let name = c.name.get_ref();
            if !is_kebab(name) {
                p.at(c.name.span(), format!("check name {name:?} must be kebab-case"));
            }
            if self.checks[..i].iter().any(|o| o.name.get_ref() == name) {
                p.at(c.name.span(), format!("check {name:?} is defined twice"));
            }
            let kind = checks::CheckKind::parse(c.kind.get_ref());
            if kind.is_none() {
                let all: Vec<&str> = checks::CheckKind::ALL.iter().map(|k| k.as_str()).collect();
                p.at(c.kind.span(), format!("check kind {:?} is not one of {}", c.kind.get_ref(), all.join(", ")));
            }
            if let Err(e) = ops::schedule::Schedule::parse(c.schedule.get_ref(), self.timezone()) {
                p.at(c.schedule.span(), e.to_string());
            }
            if c.timeout_secs == 0 {
                p.at(c.name.span(), "timeout_secs must be at least 1");
            }
            match (c.kind.get_ref().as_str(), &c.backup) {
                ("backup", None) => p.at(c.kind.span(), "a backup check needs backup = { dir = \"...\", keep = N }"),
                ("backup", Some(b)) if b.keep == 0 || b.dir.is_empty() => {
                    p.at(c.kind.span(), "backup keep must be at least 1 and dir not empty")
                }
                ("backup", Some(_)) if self.storage.engine() == Engine::Postgres => p.at(
                    c.kind.span(),
                    "a backup check copies the SQLite database; on postgres, back up the database cluster \
                     (ops/deploy/cluster.md)",
                ),
                ("backup", Some(_)) => {}
                (_, Some(_)) => p.at(c.name.span(), "only a backup check takes backup settings"),
                (_, None) => {}
            }
            match (c.kind.get_ref().as_str(), &c.full_every) {
                ("audit_chain", Some(n)) if *n.get_ref() == 0 => p.at(n.span(), "full_every must be at least 1"),
                ("audit_chain", _) | (_, None) => {}
                (_, Some(n)) => p.at(n.span(), "only an audit_chain check takes full_every"),
            }
            if let (Some(t), Some(kind)) = (&c.thresholds, kind) {
                if let Err(e) = kind.check_thresholds(t.get_ref()) {
                    p.at(t.span(), format!("check {name:?} ({}): {e}", kind.as_str()));
                }
            }
        }
        p.finish()
    }

    fn check_subscription(&self, p: &mut Problems<'_>, i: usize, sub: &SubscriptionConfig) {
        let name = sub.name.get_ref();
        if !is_kebab(name) {
            p.at(sub.name.span(), format!("subscription name {name:?} must be kebab-case"));
        }
        if self.subscriptions[..i].iter().any(|o| o.name.get_ref() == name) {
            p.at(sub.name.span(), format!("subscription {name:?} is defined twice"));
        }
        let dept = sub.department.get_ref();
        if self.department(dept).is_none() {
            p.at(sub.department.span(), format!("subscription department {dept:?} is not a department"));
        }
        let purpose = sub.purpose.get_ref();
        if !is_kebab(purpose) {
            p.at(sub.purpose.span(), format!("purpose {purpose:?} must be kebab-case"));
        }
        match self.record_type(sub.record_type.get_ref()) {
            None => p.at(
                sub.record_type.span(),
                format!("subscription record_type {:?} is not a record type", sub.record_type.get_ref()),
            ),
            Some(t) if t.owner.get_ref() == dept => {}
            Some(t) if *t.sharing.get_ref() == Sharing::Unconditional => {}
            Some(t) => {
                let granted = self.grants.iter().any(|g| {
                    g.department.get_ref() == dept
                        && g.record_type.get_ref() == t.id.get_ref()
                        && g.purposes.iter().any(|q| q.get_ref() == purpose)
                });
                if !granted {
                    p.at(
                        sub.purpose.span(),
                        format!("{dept:?} has no grant on {:?} for purpose {purpose:?}", t.id.get_ref()),
                    );
                }
            }
        }
        if let Some(f) = &sub.filter {
            if let Err(e) = crate::routing::jq::JqProgram::compile(f.get_ref()) {
                p.at(f.span(), format!("filter: {e}"));
            }
        }
        if let Some(m) = &sub.mapping {
            if let Err(e) = crate::routing::jq::JqProgram::compile(m.get_ref()) {
                p.at(m.span(), format!("mapping: {e}"));
            }
        }
        match adapters::kind(sub.adapter.get_ref()) {
            Err(e) => p.at(sub.adapter.span(), e.to_string()),
            Ok(kind) => {
                let empty = toml::Table::new();
                let (settings, span) = match &sub.settings {
                    Some(s) => (s.get_ref(), s.span()),
                    None => (&empty, sub.adapter.span()),
                };
                if let Err(e) = (kind.validate)(settings) {
                    p.at(span, format!("{} settings: {e}", kind.name));
                }
            }
        }
    }

    fn check_inbound(&self, p: &mut Problems<'_>, i: usize, c: &InboundConfig) {
        let name = c.name.get_ref();
        if !is_kebab(name) {
            p.at(c.name.span(), format!("inbound name {name:?} must be kebab-case"));
        }
        if self.inbound[..i].iter().any(|o| o.name.get_ref() == name) {
            p.at(c.name.span(), format!("inbound {name:?} is defined twice"));
        }
        let dept = c.department.get_ref();
        if self.department(dept).is_none() {
            p.at(c.department.span(), format!("inbound department {dept:?} is not a department"));
        }
        match self.record_type(c.record_type.get_ref()) {
            None => p.at(
                c.record_type.span(),
                format!("inbound record_type {:?} is not a record type", c.record_type.get_ref()),
            ),
            Some(t) if t.owner.get_ref() != dept => p.at(
                c.record_type.span(),
                format!("only {:?} may publish {:?}, not {dept:?}", t.owner.get_ref(), t.id.get_ref()),
            ),
            Some(_) => {}
        }
        if let Some(m) = &c.mapping {
            if let Err(e) = crate::routing::jq::JqProgram::compile(m.get_ref()) {
                p.at(m.span(), format!("mapping: {e}"));
            }
        }
        if let (Some(ex), None) = (&c.mapping_example, &c.mapping) {
            p.at(ex.span(), "mapping_example needs a mapping");
        }
        match adapters::kind(c.adapter.get_ref()) {
            Err(e) => p.at(c.adapter.span(), e.to_string()),
            Ok(kind) => {
                let Some(validate) = kind.validate_inbound else {
                    p.at(c.adapter.span(), format!("adapter {:?} takes no records in", kind.name));
                    return;
                };
                let empty = toml::Table::new();
                let (settings, span) = match &c.settings {
                    Some(s) => (s.get_ref(), s.span()),
                    None => (&empty, c.adapter.span()),
                };
                if let Err(e) = validate(settings) {
                    p.at(span, format!("{} settings: {e}", kind.name));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab() {
        assert!(is_kebab("civil-affairs"));
        assert!(is_kebab("hrss"));
        assert!(!is_kebab("Civil"));
        assert!(!is_kebab("a--b"));
        assert!(!is_kebab("-a"));
        assert!(!is_kebab(""));
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = Config::parse(Path::new("x.toml"), "[hub]\nname = \"a\"\n[server]\nlisten = 5\n".into()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("x.toml:4: "), "{text}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = Config::parse(Path::new("x.toml"), "[hub]\nname = \"a\"\ncolour = \"red\"\n".into()).unwrap_err();
        assert!(err.to_string().contains("x.toml:3:"), "{err}");
    }

    #[test]
    fn every_cross_check_problem_is_reported_with_its_line() {
        let text = r#"[hub]
name = "t"
[[departments]]
id = "a"
name = "A"
[[departments]]
id = "a"
name = "A again"
[[record_types]]
id = "r"
owner = "nobody"
schema = "s.json"
key = "/k/*"
subjects = ["no-slash"]
sharing = "none"
[[grants]]
department = "ghost"
record_type = "r"
purposes = ["Bad Purpose"]
fields = ["/k"]
expires = "someday"
"#;
        let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
        let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![7, 11, 13, 14, 17, 18, 19, 21], "{problems:#?}");
    }

    #[test]
    fn a_zero_rate_limit_is_refused_with_its_line() {
        let text = r#"[hub]
name = "t"
[[departments]]
id = "civil-affairs"
name = "民政局"
rate_limit = { per_second = 0 }
"#;
        let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
        let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
        let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(found, [(6, "rate_limit per_second and burst must be at least 1")]);
    }

    #[test]
    fn a_misspelt_threshold_is_refused_with_its_line_and_the_names_the_kind_takes() {
        let text = r#"[hub]
name = "t"
[[checks]]
name = "backlog"
kind = "delivery_backlog"
schedule = "0 * * * * *"
thresholds = { warn_pendng = 5 }
[[checks]]
name = "chain"
kind = "audit_chain"
schedule = "0 0 * * * *"
thresholds = { warn_entries = 1 }
[[checks]]
name = "disk"
kind = "storage"
schedule = "0 * * * * *"
thresholds = { warn_free_percent = "twenty" }
[[checks]]
name = "probe"
kind = "synthetic"
schedule = "0 * * * * *"
thresholds = { warn_ms = 2000, critical_ms = 10000 }
"#;
        let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
        let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
        let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(found.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [7, 12, 17], "{found:#?}");
        assert!(
            found[0].1.contains("\"backlog\" (delivery_backlog)") && found[0].1.contains("warn_pendng"),
            "{found:?}"
        );
        assert!(found[0].1.contains("warn_pending"), "the known names are listed: {found:?}");
        assert!(found[1].1.contains("warn_entries"), "{found:?}");
        assert!(found[2].1.contains("warn_free_percent"), "{found:?}");
    }

    #[test]
    fn a_zero_wal_bound_is_refused_with_its_line() {
        let text = r#"[hub]
name = "t"
[storage]
max_wal_mib = 0
"#;
        let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
        let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
        let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(found, [(4, "max_wal_mib must be between 1 and 1048576 (MiB)")]);
    }

    #[test]
    fn postgres_refuses_a_backup_check_and_a_lease_shorter_than_an_attempt_with_their_lines() {
        let text = r#"[hub]
name = "t"
[storage]
engine = "postgres"
[delivery]
attempt_timeout_secs = 30
lease_secs = 30
[[checks]]
name = "nightly"
kind = "backup"
schedule = "0 0 2 * * *"
backup = { dir = "backups", keep = 7 }
"#;
        let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
        let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
        let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().any(|(_, m)| m.starts_with("delivery lease_secs must be longer")), "{found:?}");
        assert!(found.iter().any(|(l, m)| *l == 10 && m.starts_with("a backup check copies the SQLite database")));
    }

    #[test]
    fn full_every_belongs_to_the_audit_chain_check_only() {
        let text = r#"[hub]
name = "t"
[[checks]]
name = "chain"
kind = "audit_chain"
schedule = "0 0 * * * *"
full_every = 0
[[checks]]
name = "disk"
kind = "storage"
schedule = "0 * * * * *"
full_every = 3
"#;
        let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
        let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
        let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(
            found,
            [(7, "full_every must be at least 1"), (12, "only an audit_chain check takes full_every")],
            "{problems:#?}"
        );
    }
}
