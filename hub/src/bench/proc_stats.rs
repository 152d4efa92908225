//! The hub's resident memory and CPU time, from /proc, sampled while the load runs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Resident set size of `pid`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU seconds of `pid`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// What the sampler saw.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Largest RSS seen.
    pub peak_rss: u64,
    /// CPU seconds per second over the run.
    pub cores: f64,
    /// Largest write-ahead log file seen (0 when none was watched).
    pub peak_wal: u64,
}

/// Samples RSS (and the size of a write-ahead log file, if given) every 100 ms until stopped.
pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Usage>,
}

impl Sampler {
    /// Starts sampling `pid`, and the file `wal` if given.
    pub fn start(pid: u32, wal: Option<PathBuf>) -> Self {
        let (stop, mut rx) = oneshot::channel();
        let wal_size = move || wal.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
        let task = tokio::spawn(async move {
            let (t0, cpu0) = (Instant::now(), cpu_seconds(pid).unwrap_or(0.0));
            let (mut peak, mut peak_wal) = (rss_bytes(pid).unwrap_or(0), wal_size());
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        peak = peak.max(rss_bytes(pid).unwrap_or(0));
                        peak_wal = peak_wal.max(wal_size());
                    }
                }
            }
            let cpu = cpu_seconds(pid).unwrap_or(cpu0) - cpu0;
            Usage { peak_rss: peak, cores: (cpu / t0.elapsed().as_secs_f64() * 100.0).round() / 100.0, peak_wal }
        });
        Self { stop, task }
    }

    /// Stops and reports.
    pub async fn stop(self) -> Usage {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(Usage { peak_rss: 0, cores: 0.0, peak_wal: 0 })
    }
}
