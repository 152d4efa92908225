//! `--stored N`: records written straight through the hub's own record way (prepare, then group
//! commits) into the data directory before the benchmarked hub starts, so the growth table can
//! start from millions of records in minutes rather than the hours a preload over HTTP takes. A
//! kept data directory (`--keep`) remembers how many of the generator's records it holds, so the
//! next run adds only what is missing and its publishes never repeat a key.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::records::marriage;

/// Records of the generator a kept data directory holds (`0` for a new one).
pub fn held(data: &Path) -> u64 {
    std::fs::read_to_string(marker(data)).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

/// Notes that `data` holds the generator's records `0..n`.
pub fn remember(data: &Path, n: u64) -> Result<()> {
    std::fs::write(marker(data), format!("{n}\n")).context("the kept data directory's record count")
}

fn marker(data: &Path) -> std::path::PathBuf {
    data.join("bench-records")
}

/// What the preload did.
pub struct Preloaded {
    /// Records written.
    pub records: u64,
    /// Wall time, the store's open and close included.
    pub elapsed: Duration,
    /// The largest write-ahead log seen while writing.
    pub peak_wal: u64,
}

/// Writes the generator's records `from..to` into `data` through the record way of the hub that
/// `config` describes, `BATCH` per commit from a few concurrent writers (as the batch endpoint's
/// callers would), then closes the store.
pub async fn preload(config: &Path, data: &Path, from: u64, to: u64) -> Result<Preloaded> {
    const BATCH: u64 = 500;
    const WRITERS: usize = 4;
    // The caller has refused `--stored` with any engine but the embedded one.
    let (cfg, catalog) = crate::load(config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let started = Instant::now();
    let (state, _) = crate::server::open(cfg, catalog, data).await.context("opening the store to preload it")?;
    // As `hub serve` does before it accepts: the store serves the subscriptions from the log, so
    // the preload writes what a served hub writes (no delivery rows).
    state.delivery.load_states().await.context("the subscriptions' cursors")?;
    let next = Arc::new(AtomicU64::new(from));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (state, next) = (state.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            let t = state.exchange.record_type("marriage-registration")?;
            loop {
                let i = next.fetch_add(BATCH, Ordering::Relaxed);
                if i >= to {
                    return Ok::<(), anyhow::Error>(());
                }
                let versions = (i..(i + BATCH).min(to))
                    .map(|j| state.exchange.prepare_doc(t, "civil-affairs", marriage(j, true), None))
                    .collect::<Result<Vec<_>, _>>()?;
                for outcome in state.exchange.commit(versions).await? {
                    outcome?;
                }
            }
        }));
    }
    let wal = data.join("hub.db-wal");
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut peak_wal = 0;
    let mut shown = from;
    while !writers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak_wal = peak_wal.max(size(&wal));
        let done = next.load(Ordering::Relaxed).min(to);
        if done >= shown + 500_000 {
            shown = done;
            eprintln!(
                "  {done} records stored, {:.0}/s, database {} MiB, WAL {} MiB",
                (done - from) as f64 / started.elapsed().as_secs_f64(),
                size(&data.join("hub.db")) >> 20,
                size(&wal) >> 20
            );
        }
    }
    for w in writers {
        w.await.context("a preload writer")??;
    }
    state.store.close().await;
    Ok(Preloaded { records: to - from, elapsed: started.elapsed(), peak_wal })
}
