//! `hub pki init|issue|revoke`: the development PKI (CA, server and client certificates, CRL).

use std::process::ExitCode;

use anyhow::bail;

use super::{load_or_report, PkiCommand};
use crate::pki::DevPki;
use crate::policy::Directory;

/// Runs one PKI command.
pub(super) fn run(command: PkiCommand) -> anyhow::Result<ExitCode> {
    match command {
        PkiCommand::Init { data, config } => {
            let (config, _) = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let created = DevPki::new(&data).ensure(Directory::new(&config).ids())?;
            println!("development PKI in {}: {} file(s) created", data.join("pki").display(), created.len());
            Ok(ExitCode::SUCCESS)
        }
        PkiCommand::Issue { data, name, days, p12_password_env, config } => {
            let (config, _) = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let directory = Directory::new(&config);
            if directory.by_common_name(&name).is_none() {
                bail!("{name:?} is not a department or operator in {}", config.path.display());
            }
            let pki = DevPki::new(&data);
            if !pki.ca_key().exists() {
                bail!("{} does not exist: run `hub pki init --data {}` first", pki.ca_key().display(), data.display());
            }
            // Read before anything is issued: a missing password must not leave a new key behind.
            let password = match &p12_password_env {
                Some(var) => match std::env::var(var) {
                    Ok(p) if !p.is_empty() => Some(p),
                    _ => bail!("--p12-password-env {var}: the environment variable {var} is not set or empty"),
                },
                None => None,
            };
            pki.issue_client(&name, days)?;
            println!("{} and {}", pki.client_cert(&name).display(), pki.client_key(&name).display());
            if let Some(password) = password {
                println!("{}", pki.write_pkcs12(&name, &password)?.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        PkiCommand::Revoke { data, name } => {
            let pki = DevPki::new(&data);
            if !pki.client_cert(&name).exists() {
                bail!("{} does not exist", pki.client_cert(&name).display());
            }
            pki.revoke(&name)?;
            println!("revoked {name}; {} re-signed (restart the hub to apply it)", pki.crl().display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
