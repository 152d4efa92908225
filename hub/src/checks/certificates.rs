//! `certificates`: days until the CA, server and client certificates expire, and the CRL's age.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::config::checks::{CertificateThresholds, CheckKind};
use crate::config::Config;

pub(super) struct Certificates {
    pub(super) n: Named,
    pub(super) t: CertificateThresholds,
    pub(super) files: Vec<(String, PathBuf)>,
    pub(super) crl: Option<PathBuf>,
}

/// Age in days of a CRL (`this_update`) and days until its `next_update`.
fn crl_times(path: &Path) -> Result<(f64, Option<f64>), String> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let der = if bytes.starts_with(b"-----") {
        rustls::pki_types::CertificateRevocationListDer::from_pem_slice(&bytes)
            .map_err(|e| e.to_string())?
            .as_ref()
            .to_vec()
    } else {
        bytes
    };
    let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    let age = (now - crl.last_update().timestamp()) as f64 / 86_400.0;
    let left = crl.next_update().map(|t| (t.timestamp() - now) as f64 / 86_400.0);
    Ok((age, left))
}

fn not_after(path: &Path) -> Result<i64, String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(path).map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp())
}

#[async_trait]
impl Check for Certificates {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Certificates.as_str()
    }
    async fn run(&self) -> Report {
        let t = &self.t;
        let now = chrono::Utc::now().timestamp();
        let mut worst = Status::Ok;
        let mut soonest: Option<(f64, String)> = None;
        let mut notes = Vec::new();
        for (label, path) in &self.files {
            let days = match not_after(path) {
                Ok(ts) => (ts - now) as f64 / 86_400.0,
                Err(e) => {
                    notes.push(format!("{label}: unreadable ({e})"));
                    worst = Status::Critical;
                    continue;
                }
            };
            // Fewer days left is worse.
            let s = if days <= t.critical_days {
                Status::Critical
            } else if days <= t.warn_days {
                Status::Warn
            } else {
                Status::Ok
            };
            if s > Status::Ok {
                notes.push(format!("{label} expires in {days:.0} days"));
            }
            worst = worst.max(s);
            if soonest.as_ref().is_none_or(|(d, _)| days < *d) {
                soonest = Some((days, label.clone()));
            }
        }
        let mut crl_age = None;
        if let Some(path) = &self.crl {
            match crl_times(path) {
                Ok((age, left)) => {
                    crl_age = Some(age);
                    if left.is_some_and(|l| l < 0.0) {
                        notes.push("the CRL is past its next update".into());
                        worst = Status::Critical;
                    } else if age > t.warn_crl_age_days {
                        notes.push(format!("the CRL is {age:.0} days old"));
                        worst = worst.max(Status::Warn);
                    }
                }
                Err(e) => {
                    notes.push(format!("the CRL is unreadable ({e})"));
                    worst = Status::Critical;
                }
            }
        }
        let summary = if notes.is_empty() {
            match &soonest {
                Some((d, l)) => {
                    format!("{} certificates valid; the first to expire is {l}, in {d:.0} days", self.files.len())
                }
                None => "no certificates to check".to_owned(),
            }
        } else {
            notes.join("; ")
        };
        let report = Report::new(worst, summary)
            .with("certificates", self.files.len() as f64)
            .with("min_days_left", soonest.map_or(0.0, |s| s.0));
        match crl_age {
            Some(age) => report.with("crl_age_days", age),
            None => report,
        }
    }
}

/// The certificates a `certificates` check watches: CA, server, and every client certificate.
pub(super) fn certificate_files(config: &Config, data: &Path) -> Vec<(String, PathBuf)> {
    let tls = crate::pki::TlsFiles::of(config, data);
    let mut files = vec![("ca".to_owned(), tls.ca), ("server".to_owned(), tls.cert)];
    let clients = data.join("pki").join("clients");
    if let Ok(dir) = std::fs::read_dir(&clients) {
        let mut names: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        names.sort();
        for p in names {
            let label = format!("client {}", p.file_stem().and_then(|s| s.to_str()).unwrap_or("?"));
            files.push((label, p));
        }
    }
    files
}
