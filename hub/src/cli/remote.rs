//! The operator commands against a running hub (`status`, `checks`, `dlq`, `cases`): one mTLS
//! connection as an operator, the output printed as a table or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{load_or_report, ChecksCommand, DlqCommand, Remote};

type Names = Box<dyn Fn(&str) -> String + Send + Sync>;
type RemoteFuture = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<String>>>>;

/// Runs an operator command against a running hub and prints its output.
fn remote(
    to: Remote,
    f: impl FnOnce(crate::opsctl::Connection, Names, bool) -> RemoteFuture,
) -> anyhow::Result<ExitCode> {
    let (config, _) = match load_or_report(&to.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let data = to.data.unwrap_or_else(|| PathBuf::from(&config.storage.path));
    let url = to.url.unwrap_or_else(|| format!("https://{}", config.server.listen.get_ref()));
    let names: std::collections::HashMap<String, String> =
        config.departments.iter().map(|d| (d.id.get_ref().clone(), d.name.clone())).collect();
    let names: Names = Box::new(move |id| names.get(id).cloned().unwrap_or_default());
    let conn = crate::opsctl::Connection::new(url, &data, &to.principal)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let text = runtime.block_on(f(conn, names, to.format == "json"))?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `hub status`.
pub(super) fn status(to: Remote) -> anyhow::Result<ExitCode> {
    remote(to, |c, names, json| Box::pin(async move { crate::opsctl::status(&c, &names, json).await }))
}

/// `hub checks list|run|history`.
pub(super) fn checks(command: ChecksCommand) -> anyhow::Result<ExitCode> {
    match command {
        ChecksCommand::List { to } => {
            remote(to, |c, _, json| Box::pin(async move { crate::opsctl::checks_list(&c, json).await }))
        }
        ChecksCommand::Run { name, to } => {
            remote(to, move |c, _, json| Box::pin(async move { crate::opsctl::checks_run(&c, &name, json).await }))
        }
        ChecksCommand::History { name, to } => {
            remote(to, move |c, _, json| Box::pin(async move { crate::opsctl::checks_history(&c, &name, json).await }))
        }
    }
}

/// `hub dlq list|retry`.
pub(super) fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { subscription, to } => remote(to, move |c, _, json| {
            Box::pin(async move { crate::opsctl::dlq_list(&c, subscription.as_deref(), json).await })
        }),
        DlqCommand::Retry { id, to } => {
            remote(to, move |c, _, _| Box::pin(async move { crate::opsctl::dlq_retry(&c, id).await }))
        }
    }
}

/// `hub cases`.
pub(super) fn cases(to: Remote) -> anyhow::Result<ExitCode> {
    remote(to, |c, names, json| Box::pin(async move { crate::opsctl::cases(&c, &names, json).await }))
}
