//! The commands on a data directory or a configuration: `config check`, `backup`, `restore`,
//! `audit verify`, `migrate` and the signed monthly reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use super::{load_or_report, progress_bar};
use crate::ledger::keys;
use crate::store::backup;
use crate::store::sqlite::SqliteStore;

pub(super) fn config_check(path: &Path) -> anyhow::Result<ExitCode> {
    let (config, catalog) = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    for w in catalog.cases.warnings.iter().chain(&config.warnings()) {
        println!("{}:{}: warning: {}", w.file.display(), w.line, w.message);
    }
    let counts: Vec<String> = counts(&config, &catalog).iter().map(|(_, label, n)| format!("{n} {label}")).collect();
    println!("{}: ok — {}", path.display(), counts.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// What a checked config holds, for both forms of `config check`: (JSON key, text label, count).
fn counts(config: &crate::Config, catalog: &crate::Catalog) -> [(String, &'static str, usize); 9] {
    [
        ("departments".into(), "departments", config.departments.len()),
        ("operators".into(), "operators", config.operators.len()),
        ("record_types".into(), "record types", catalog.iter().count()),
        ("grants".into(), "grants", config.grants.len()),
        ("subscriptions".into(), "subscriptions", config.subscriptions.len()),
        ("inbound".into(), "inbound connections", config.inbound.len()),
        ("case_types".into(), "case types", catalog.cases.iter().count()),
        ("purposes".into(), "purposes", config.purpose_register().purposes.len()),
        ("services".into(), "services", config.services.len()),
    ]
}

/// `hub config check --format json`: `{config, ok, problems, warnings, counts}` on stdout, each
/// problem and warning `{file, line, message}`; exit 1 when there is a problem.
pub(super) fn config_check_json(path: &Path) -> anyhow::Result<ExitCode> {
    let located = |file: &Path, line: usize, message: &str| serde_json::json!({ "file": file.display().to_string(), "line": line, "message": message });
    let doc = match crate::load(path) {
        Ok((config, catalog)) => {
            let warnings: Vec<_> = catalog
                .cases
                .warnings
                .iter()
                .chain(&config.warnings())
                .map(|w| located(&w.file, w.line, &w.message))
                .collect();
            serde_json::json!({
                "config": path.display().to_string(), "ok": true, "problems": [], "warnings": warnings,
                "counts": counts(&config, &catalog).into_iter().map(|(key, _, n)| (key, n.into())).collect::<serde_json::Map<_, _>>(),
            })
        }
        Err(crate::config::ConfigError::Invalid(problems)) => serde_json::json!({
            "config": path.display().to_string(), "ok": false, "warnings": [],
            "problems": problems.iter().map(|p| located(&p.file, p.line, &p.message)).collect::<Vec<_>>(),
        }),
        Err(e) => serde_json::json!({
            "config": path.display().to_string(), "ok": false, "warnings": [],
            "problems": [located(path, 0, &e.to_string())],
        }),
    };
    println!("{doc}");
    Ok(if doc["ok"] == true { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Which signed monthly report `hub report` makes.
pub(super) enum Report {
    /// The SLA report, as JSON or printable HTML.
    Sla {
        /// `json` or `html`.
        html: bool,
    },
    /// The documents-spared report, as JSON or printable HTML.
    DocumentsSpared {
        /// `json` or `html`.
        html: bool,
    },
    /// The joint-case report, as JSON or printable HTML.
    Cases {
        /// `json` or `html`.
        html: bool,
    },
}

/// `hub report sla` and `hub report cases`: a signed monthly report, read from the data
/// directory or the database the config names.
pub(super) fn report(what: Report, month: &str, data: Option<PathBuf>, config: &Path) -> anyhow::Result<ExitCode> {
    let (config, catalog) = match load_or_report(config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let data = data.unwrap_or_else(|| PathBuf::from(&config.storage.path));
    if config.storage.engine() == crate::config::Engine::Sqlite && !crate::store::sqlite::db_path(&data).exists() {
        bail!("{} holds no hub database", data.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let text = runtime.block_on(async {
        let keys = std::sync::Arc::new(keys::HubKeys::load_or_create(&data, config.audit.suite)?);
        let store = crate::store::open(&config, &data, keys.clone()).await?;
        let (hub, tz) = (config.hub.name.get_ref(), config.timezone());
        let signed = match what {
            Report::Sla { .. } => crate::report::sla(&*store, &keys, hub, tz, month).await,
            Report::DocumentsSpared { .. } => crate::services::documents_spared(&*store, &keys, &config, month).await,
            Report::Cases { .. } => {
                crate::cases::report::monthly(&*store, &catalog.cases, &keys, hub, tz, month, false).await
            }
        };
        store.close().await;
        let signed = signed?;
        Ok::<_, anyhow::Error>(match what {
            Report::Sla { html: true } => crate::report::html(&signed),
            Report::Cases { html: true } => crate::cases::report::html(&signed),
            Report::DocumentsSpared { html: true } => crate::services::html(&signed),
            _ => serde_json::to_string_pretty(&signed)?,
        })
    })?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `hub backup`: an online snapshot, its chain verified.
pub(super) fn backup(data: &Path, out: &Path) -> anyhow::Result<ExitCode> {
    let bar = progress_bar("verifying the snapshot's audit chain");
    let report = backup::backup(data, out, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    print_report("backup", out, &report)
}

/// `hub restore`: a snapshot back into a data directory, its chain verified.
pub(super) fn restore(from: &Path, data: &Path) -> anyhow::Result<ExitCode> {
    let bar = progress_bar("verifying the restored audit chain");
    let report = backup::restore(from, data, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    print_report("restore", data, &report)
}

/// `hub audit verify`: offline on SQLite, or in the PostgreSQL database a config names.
pub(super) fn audit_verify(
    data: &Path,
    public_key: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let key_path = public_key.unwrap_or_else(|| keys::dir(data).join("audit-signing.pub"));
    let key = keys::load_public_key(&key_path)?;
    let shared = match config {
        Some(path) => match load_or_report(&path) {
            Ok((c, _)) => (c.storage.engine() == crate::config::Engine::Postgres).then_some(c),
            Err(code) => return Ok(code),
        },
        None => None,
    };
    let verdict = match shared {
        Some(config) => verify_postgres(&config, data, key)?,
        None => SqliteStore::verify_offline(data, key)?,
    };
    match verdict {
        Ok(r) => {
            println!(
                "audit chain ok: {} entries checked, {} signed checkpoints, head seq {} digest {}, suite {}",
                r.entries, r.checkpoints, r.head_seq, r.head_digest, r.suite
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            eprintln!("hub: {broken}");
            Ok(ExitCode::from(1))
        }
    }
}

fn print_report(what: &str, path: &Path, report: &backup::Report) -> anyhow::Result<ExitCode> {
    match &report.chain {
        Ok(chain) => {
            println!(
                "{what} ok: {} ({} bytes, {} key and certificate files); audit chain: {} entries, head seq {} digest {}",
                path.display(),
                report.bytes,
                report.files,
                chain.entries,
                chain.head_seq,
                chain.head_digest
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            // The copy is kept (it is evidence), but the operator must know.
            eprintln!("hub: {what} written to {}, but its {broken}", path.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// The PostgreSQL store a config names, with the keys of `data` (its writer is closed by the caller).
async fn connect_postgres(
    config: &crate::config::Config,
    data: &Path,
) -> anyhow::Result<crate::store::postgres::PostgresStore> {
    let var = &config.storage.url_env;
    let url =
        std::env::var(var).with_context(|| format!("the environment variable {var} ([storage] url_env) is not set"))?;
    // The node's keys must be there: made up here, they would be refused by the database (or,
    // on a new one, become the cluster's).
    let signing = keys::dir(data).join("audit-signing.key");
    if !signing.exists() {
        bail!("{} does not exist: give the data directory of a node of this hub", signing.display());
    }
    let keys = std::sync::Arc::new(keys::HubKeys::load_or_create(data, config.audit.suite)?);
    let opts = crate::store::postgres::PgOptions {
        url: url.clone(),
        max_connections: 4,
        group_commit_max: config.storage.group_commit_max,
        checkpoint_every: config.audit.checkpoint_every,
    };
    crate::store::postgres::PostgresStore::open(keys, opts)
        .await
        .with_context(|| format!("cannot open {}", crate::store::postgres::redact(&url)))
}

fn verify_postgres(
    config: &crate::config::Config,
    data: &Path,
    key: crate::ledger::keys::PublicKey,
) -> anyhow::Result<Result<crate::ledger::ChainReport, crate::ledger::ChainBroken>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = connect_postgres(config, data).await?;
        let bar = progress_bar("verifying the audit chain");
        let verdict = store.verify_with(key, None, &mut |seq| bar.set_position(seq)).await?;
        bar.finish_and_clear();
        crate::store::Store::close(&store).await;
        Ok(verdict)
    })
}

/// `hub migrate --from sqlite --to postgres`: every row copied, counts matched, chain verified.
pub(super) fn migrate(config: &crate::config::Config, data: &Path) -> anyhow::Result<ExitCode> {
    let key = keys::load_public_key(&keys::dir(data).join("audit-signing.pub"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let migrated = runtime.block_on(async {
        let target = connect_postgres(config, data).await?;
        let bar = progress_bar("copying");
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({eta})") {
            bar.set_style(style.progress_chars("=> "));
        }
        let result = crate::store::migrate::sqlite_to_postgres(data, &target, key, &mut |table, done, total| {
            bar.set_message(format!("copying {table}"));
            bar.set_length(total);
            bar.set_position(done);
        })
        .await;
        bar.finish_and_clear();
        crate::store::Store::close(&target).await;
        anyhow::Ok(result?)
    })?;
    for (table, n) in &migrated.tables {
        println!("{table:>20}: {n} rows");
    }
    println!(
        "migrate ok: every row count matches; audit chain verified on PostgreSQL: {} entries, {} signed checkpoints, head seq {} digest {}",
        migrated.chain.entries, migrated.chain.checkpoints, migrated.chain.head_seq, migrated.chain.head_digest
    );
    println!("set [storage] engine = \"postgres\" in the config and start the hub nodes");
    Ok(ExitCode::SUCCESS)
}
