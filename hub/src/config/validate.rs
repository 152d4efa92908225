//! The cross-checks that need no I/O beyond this file's folder: names, references, pointer
//! syntax, sharing, limits. Every problem is collected with its line.

use std::net::SocketAddr;

use toml::Spanned;

use super::*;
use crate::catalog::pointer::FieldPointer;

impl Config {
    /// Every check that needs no file but this one: names, references, pointer syntax, sharing.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new(&self.path, &self.source);
        self.check_hub_and_limits(&mut p);
        self.check_tls(&mut p);
        self.check_principals(&mut p);
        self.check_record_types(&mut p);
        self.check_grants(&mut p);
        self.check_purposes(&mut p);
        self.check_services(&mut p);
        self.check_delivery(&mut p);
        self.check_ops(&mut p);
        self.check_cases(&mut p);
        self.check_telemetry(&mut p);
        p.finish()
    }

    /// The collector's URL and the sampling share.
    fn check_telemetry(&self, p: &mut Problems<'_>) {
        let Some(t) = &self.telemetry else { return };
        let url = t.otlp_endpoint.get_ref();
        // Plain HTTP to a collector beside the hub (an agent on the host or in the pod), as
        // collectors are run: the spans carry no personal data.
        let parsed = url.parse::<http::Uri>().ok().filter(|u| u.scheme_str() == Some("http"));
        if parsed.is_none_or(|u| u.host().is_none()) {
            p.at(
                t.otlp_endpoint.span(),
                "otlp_endpoint must be an http:// URL such as http://127.0.0.1:4318/v1/traces",
            );
        }
        if !(0.0..=1.0).contains(t.sample_ratio.get_ref()) {
            p.at(t.sample_ratio.span(), "sample_ratio must be between 0 and 1");
        }
    }

    /// Names, addresses, and the limits that must be at least one.
    fn check_hub_and_limits(&self, p: &mut Problems<'_>) {
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
    }

    /// Certificates: required without the development PKI, and present on disk.
    fn check_tls(&self, p: &mut Problems<'_>) {
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
    }

    /// Departments and operators: kebab-case ids, none twice, well-formed token digests.
    fn check_principals(&self, p: &mut Problems<'_>) {
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
    }

    /// Record types: unique kebab-case ids, a department as owner, key and subject pointers.
    fn check_record_types(&self, p: &mut Problems<'_>) {
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
    }

    /// Grants: known department and record type, something to share, purposes not granted twice.
    fn check_grants(&self, p: &mut Problems<'_>) {
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
    }

    /// Delivery policy, then each subscription and inbound connection.
    fn check_delivery(&self, p: &mut Problems<'_>) {
        if self.delivery.max_attempts == 0 || self.delivery.concurrency == 0 || self.delivery.attempt_timeout_secs == 0
        {
            p.at(0..0, "delivery max_attempts, concurrency and attempt_timeout_secs must be at least 1");
        }
        if self.delivery.backoff_initial_ms == 0 || self.delivery.backoff_max_ms < self.delivery.backoff_initial_ms {
            p.at(0..0, "delivery backoff_initial_ms must be at least 1 and at most backoff_max_ms");
        }
        for (i, sub) in self.subscriptions.iter().enumerate() {
            self.check_subscription(p, i, sub);
        }
        for (i, c) in self.inbound.iter().enumerate() {
            self.check_inbound(p, i, c);
        }
    }

    /// The ops section (metrics listener, alert webhook) and every scheduled check.
    fn check_ops(&self, p: &mut Problems<'_>) {
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
            if let Err(e) = ::ops::schedule::Schedule::parse(c.schedule.get_ref(), self.timezone()) {
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
            // Case events are addressed to a department and carry what its grants allow.
            None if sub.record_type.get_ref() == CASE_EVENT_TYPE => {}
            None => p.at(
                sub.record_type.span(),
                format!("subscription record_type {:?} is not a record type", sub.record_type.get_ref()),
            ),
            Some(t) if t.owner.get_ref() == dept => {}
            Some(t) if *t.sharing.get_ref() == Sharing::Unconditional => {}
            Some(t) if self.has_grant(dept, t.id.get_ref(), purpose) => {}
            Some(t) => p.at(
                sub.purpose.span(),
                format!("{dept:?} has no grant on {:?} for purpose {purpose:?}", t.id.get_ref()),
            ),
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
        if let Some(m) = &c.case_step {
            if let Err(e) = crate::routing::jq::JqProgram::compile(m.get_ref()) {
                p.at(m.span(), format!("case_step: {e}"));
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
