//! The hub's TOML configuration: its shape (`deny_unknown_fields` everywhere), its defaults, and the
//! checks that need no I/O. Schema-dependent checks live in `catalog`, which reports problems in
//! the same `FILE:LINE: message` form so that `hub config check` lists every problem at once.

mod cases;
pub mod checks;
mod delivery;
mod maintenance;
mod parties;
mod problems;
mod sections;
mod services;
pub mod text;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use cases::*;
pub use delivery::*;
pub use maintenance::*;
pub use parties::*;
pub use problems::*;
pub use sections::*;
pub use services::*;

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
    /// `[[purposes]]`: the register of purposes a department may state.
    #[serde(default)]
    pub purposes: Vec<PurposeConfig>,
    /// `[[services]]`: the plan's online services and the shared records each reads.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
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
    /// `[cases]`: the working-day calendar and the sweep for late steps.
    #[serde(default)]
    pub cases: CasesSection,
    /// `[[case_types]]`: joint cases across departments.
    #[serde(default)]
    pub case_types: Vec<CaseTypeConfig>,
    /// `[telemetry]`: OTLP traces, off when absent.
    #[serde(default)]
    pub telemetry: Option<TelemetrySection>,
    /// Where the file was read from; relative paths inside it resolve against its folder.
    #[serde(skip)]
    pub path: PathBuf,
    /// The file's text, kept to turn spans into line numbers.
    #[serde(skip)]
    pub source: String,
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

    /// The grant that lets `department` read `record_type` for `purpose` (expiry aside: that is
    /// the policy's, at the time of the read).
    pub fn grant_for(&self, department: &str, record_type: &str, purpose: &str) -> Option<&GrantConfig> {
        self.grants.iter().find(|g| {
            g.department.get_ref() == department
                && g.record_type.get_ref() == record_type
                && g.purposes.iter().any(|q| q.get_ref() == purpose)
        })
    }

    /// Whether such a grant exists.
    pub fn has_grant(&self, department: &str, record_type: &str, purpose: &str) -> bool {
        self.grant_for(department, record_type, purpose).is_some()
    }

    /// A record type by id.
    pub fn record_type(&self, id: &str) -> Option<&RecordTypeConfig> {
        self.record_types.iter().find(|t| t.id.get_ref() == id)
    }
}

#[cfg(test)]
mod tests;
