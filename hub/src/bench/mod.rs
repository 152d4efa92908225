//! `hub bench`: the load generator. It starts the real `hub serve` as a child process on a copy
//! of the config (front-end exchange connections and scheduled checks left out), drives it over
//! mutual TLS with the development certificates — N connections, HTTP/1.1 keep-alive or HTTP/2,
//! closed loop (as fast as answers come) or open loop (a fixed offered rate, latency measured
//! from each request's intended start, so a stalled server cannot hide its queue: no coordinated
//! omission) — and reports latency percentiles from an HDR histogram, throughput, errors, and
//! the hub's peak RSS and CPU. `--baseline` runs the same requests against a bare TLS server that
//! parses (and then also validates) and answers 202, and `--peer` the same records through what a
//! city could use instead (see `peer`): the report gives the hub's figure as a ratio of each. Like `cli`, this is a command-line tool: errors are `anyhow`.

mod baseline;
mod load;
mod peer;
mod proc_stats;
mod receiver;
mod records;
mod stored;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub use baseline::{serve_baseline, BaselineMode};
use load::{Load, Outcome};
pub use peer::Peer;

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1 KiB marriage registrations, unique keys, valid (201).
    Publish,
    /// The same with a broken check digit (422).
    PublishInvalid,
    /// GET of preloaded records by Family Planning, for its purpose (projected).
    Read,
    /// POST /v1/lookup by resident ID (audited, projected).
    Lookup,
    /// publish : lookup = 1 : 4.
    Mixed,
    /// Publishes routed to webhooks on a local receiver that verifies every signature.
    Deliver,
}

/// The store a benchmarked hub runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchEngine {
    /// The embedded default.
    Sqlite,
    /// A fresh PostgreSQL database on `--peer-url`'s server.
    Postgres,
}

/// `hub bench` options.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenario.
    #[arg(long, value_enum, default_value = "publish")]
    pub scenario: Scenario,
    /// Concurrent connections (one client each).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long to load (e.g. 20s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests, warm-up included (or at the end of the duration).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open loop: offered requests per second over all connections (default: closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// HTTP/2 (one stream at a time per connection) instead of HTTP/1.1 keep-alive.
    #[arg(long)]
    pub http2: bool,
    /// Also measure the bare TLS parse, and parse + validate, servers with the same requests.
    #[arg(long)]
    pub baseline: bool,
    /// Also measure a peer with the same records and connections (repeatable).
    #[arg(long, value_enum)]
    pub peer: Vec<Peer>,
    /// The RabbitMQ of `--peer rabbitmq`.
    #[arg(long, env = "HUB_BENCH_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub peer_amqp_url: String,
    /// The PostgreSQL of `--peer postgres`, `--peer pgbench` and of `--engine postgres` (which
    /// makes a database of its own there for the run and drops it after).
    #[arg(long, env = "HUB_BENCH_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub peer_url: String,
    /// The hub's store.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub engine: BenchEngine,
    /// Hub nodes on the one PostgreSQL database, the connections spread over them (resource
    /// figures are the first node's).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// `deliver`: events per webhook request (the webhook's `batch` setting; 1 sends each alone).
    #[arg(long, default_value_t = 1)]
    pub webhook_batch: usize,
    /// The hub config to run (its front-end exchange connections and checks are left out).
    #[arg(long, default_value = "config/conghua.toml")]
    pub config: PathBuf,
    /// Records published before `read`, `lookup` and `mixed`.
    #[arg(long, default_value_t = 5000)]
    pub preload: u64,
    /// Records written straight through the store before the hub starts, in any scenario (the
    /// growth table: 0, 1 M, 5 M); they replace `--preload`. SQLite only.
    #[arg(long, default_value_t = 0)]
    pub stored: u64,
    /// The hub's data directory, kept after the run (default: a temporary one). A directory kept
    /// from an earlier run is reused: `--stored` adds only the records it does not hold yet.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Warm-up before measuring (connections opened, caches filled).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as 20s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: the unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A hub (or baseline server) started as a child process.
struct Server {
    child: Child,
    url: String,
    /// From the spawn to the line that says it is ready.
    ready_after: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hub COMMAND --config CONFIG --data DATA --listen 127.0.0.1:PORT` on a free port and
/// waits for `ready` on its stderr (copied to `log`).
fn spawn(
    command: &[&str],
    config: &Path,
    data: &Path,
    ready: &'static str,
    log: &Path,
    env: &[(&str, String)],
) -> Result<Server> {
    use std::io::{BufRead, Write};
    let port = free_port()?;
    let started = std::time::Instant::now();
    let exe = std::env::current_exe().context("the hub binary")?;
    let mut child = Command::new(exe)
        .args(command)
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // HUB_BENCH_HUB_LOG: the hub's log filter for a run (e.g. to see the WAL's restarts).
        .env("HUB_LOG", std::env::var("HUB_BENCH_HUB_LOG").unwrap_or_else(|_| "warn,hub::cli=info".into()))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the hub")?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut file = std::fs::File::create(log)?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if line.contains(ready) {
                let _ = tx.send(());
            }
        }
    });
    // Generous: how long a hub with millions of records takes to start is itself measured.
    if rx.recv_timeout(Duration::from_secs(300)).is_err() {
        let _ = child.kill();
        bail!("the server did not become ready; see {}", log.display());
    }
    Ok(Server { child, url: format!("https://127.0.0.1:{port}"), ready_after: started.elapsed() })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Machine facts printed with every run: the ratios are what we track, the facts say why the
/// absolute figures differ between machines.
fn machine(dir: &Path) -> Result<Value> {
    use std::io::Write;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0u8; 4096];
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    Ok(json!({"cores": cores, "fsyncs_per_s": rate.round(), "kernel": kernel}))
}

/// Runs `hub bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = args.keep.clone().unwrap_or_else(|| tmp.path().join("data"));
    if args.stored > 0 && args.engine != BenchEngine::Sqlite {
        bail!("--stored writes the embedded store directly: use it with --engine sqlite");
    }
    if args.baseline && args.scenario != Scenario::Publish {
        bail!("--baseline compares the publish path: use it with --scenario publish");
    }
    let facts = machine(tmp.path())?;
    eprintln!(
        "machine: {} cores, {} fsync/s (4 KiB, fdatasync), kernel {}",
        facts["cores"],
        facts["fsyncs_per_s"],
        facts["kernel"].as_str().unwrap_or("?")
    );

    // The config: beside the original, so its relative paths (schemas) still resolve.
    let original = std::fs::read_to_string(&args.config).with_context(|| format!("{}", args.config.display()))?;
    let mut text = crate::config::text::without_checks(&crate::config::text::keep_exchange(&original, &[]));
    let receiver = if args.scenario == Scenario::Deliver {
        let r = receiver::Receiver::start().await?;
        text = receiver::point_webhooks_at(&text, &r.url, args.webhook_batch);
        Some(r)
    } else {
        None
    };
    let config_dir = args.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let config = config_dir.join(format!(".bench-{}.toml", std::process::id()));
    std::fs::write(&config, &text)?;
    let _cleanup = RemoveOnDrop(config.clone());

    let database = match args.engine {
        BenchEngine::Sqlite => None,
        BenchEngine::Postgres => {
            text = with_postgres_engine(&text);
            std::fs::write(&config, &text)?;
            Some(peer::Database::create(&args.peer_url).await?)
        }
    };
    if args.nodes > 1 && database.is_none() {
        bail!("--nodes shares one database between hub nodes: use it with --engine postgres");
    }
    let env: Vec<(&str, String)> = database.iter().map(|d| ("HUB_DATABASE_URL", d.url.clone())).collect();
    let held = stored::held(&data);
    let mut preloaded = Value::Null;
    if args.stored > held {
        eprintln!("storing records {held}..{} through the store", args.stored);
        let p = stored::preload(&config, &data, held, args.stored).await?;
        stored::remember(&data, args.stored)?;
        eprintln!(
            "stored {} records in {:.1} s ({:.0}/s), WAL peak {} MiB",
            p.records,
            p.elapsed.as_secs_f64(),
            p.records as f64 / p.elapsed.as_secs_f64().max(1e-9),
            p.peak_wal >> 20
        );
        preloaded = json!({"records": p.records, "seconds": (p.elapsed.as_secs_f64() * 10.0).round() / 10.0,
                           "wal_peak_mib": mib(p.peak_wal)});
    }
    let stored_records = held.max(args.stored);
    let db_file = data.join("hub.db");
    let file_size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    // Before the run adds its own records and audit entries.
    let db_at_start = file_size(&db_file);
    let hub = spawn(&["serve"], &config, &data, "hub listening", &tmp.path().join("hub.log"), &env)?;
    let mut peers = Vec::new();
    for n in 1..args.nodes.max(1) {
        let node_data = tmp.path().join(format!("data-{n}"));
        crate::server::copy_node_identity(&data, &node_data)?;
        let log = tmp.path().join(format!("hub-{n}.log"));
        peers.push(spawn(&["serve"], &config, &node_data, "hub listening", &log, &env)?);
    }
    let urls: Vec<String> = std::iter::once(&hub).chain(&peers).map(|s| s.url.clone()).collect();
    let pid = hub.child.id();
    let idle_rss = proc_stats::rss_bytes(pid).unwrap_or(0);
    if let Some(r) = &receiver {
        r.load_secrets(&data.join("keys/webhooks"))?;
    }

    eprintln!("ready after {:.2} s with {stored_records} records stored", hub.ready_after.as_secs_f64());
    let gen = Arc::new(records::Generator::new(args.scenario));
    gen.preloaded(stored_records);
    let clients = load::Clients::new(&data, args.connections, args.http2)?;
    if stored_records == 0 && matches!(args.scenario, Scenario::Read | Scenario::Lookup | Scenario::Mixed) {
        eprintln!("preloading {} records", args.preload);
        load::preload(&clients, &urls[0], &gen, args.preload).await?;
    }
    let load = Load::new(&args);
    let wal = (args.engine == BenchEngine::Sqlite).then(|| data.join("hub.db-wal"));
    let stats = proc_stats::Sampler::start(pid, wal);
    let hub_result = load.run(&clients, &urls, gen.clone()).await?;
    let usage = stats.stop().await;
    if args.keep.is_some() && args.engine == BenchEngine::Sqlite {
        // Publishes of a later run must not repeat this run's keys.
        stored::remember(&data, gen.published())?;
    }
    let records_now = gen.published();
    let mut results = json!({
        "scenario": args.scenario, "connections": args.connections,
        "engine": format!("{:?}", args.engine).to_lowercase(), "nodes": args.nodes.max(1),
        "http": if args.http2 { "2" } else { "1.1" },
        "mode": args.rate.map_or("closed loop".to_owned(), |r| format!("open loop, {r}/s offered")),
        "machine": facts,
        "record_bytes": gen.sample_len(),
        "hub": hub_result.json(),
        "hub_rss_idle_mib": mib(idle_rss), "hub_rss_peak_mib": mib(usage.peak_rss), "hub_cpu_cores": usage.cores,
        "stored_before": stored_records, "stored_now": preloaded, "ready_s": (hub.ready_after.as_secs_f64() * 100.0).round() / 100.0,
    });
    if args.engine == BenchEngine::Sqlite {
        let db = file_size(&db_file);
        results["database_mib"] = json!(mib(db));
        results["database_mib_at_start"] = json!(mib(db_at_start));
        if stored_records > 0 {
            results["database_bytes_per_stored_record"] = json!((db_at_start as f64 / stored_records as f64).round());
        }
        results["wal_peak_mib"] = json!(mib(usage.peak_wal));
        // Everything in the file counts, free pages too: what the disk holds.
        results["database_bytes_per_record"] = json!((db as f64 / records_now.max(1) as f64).round());
        eprintln!(
            "database {:.0} MiB, {:.0} bytes per record ({records_now} records); WAL peak {:.0} MiB",
            mib(db),
            db as f64 / records_now.max(1) as f64,
            mib(usage.peak_wal)
        );
    }
    let name = match (args.engine, args.nodes.max(1)) {
        (BenchEngine::Sqlite, _) => format!("hub {:?}", args.scenario),
        (BenchEngine::Postgres, n) => format!("hub {:?} pg x{n}", args.scenario),
    };
    print_row(&name.to_lowercase(), &hub_result, Some(&usage));
    if let Some(r) = &receiver {
        // Let the last deliveries arrive before counting.
        let d = r.wait_settled(Duration::from_secs(30)).await;
        let deliveries = json!({
            "events": d.events, "bad_signatures": d.bad_signatures,
            "per_s": d.per_s, "publish_to_receipt_ms": {"p50": d.p50_ms, "p99": d.p99_ms, "max": d.max_ms},
        });
        eprintln!(
            "deliveries: {} events, {:.0}/s, publish to receipt p50 {:.1} ms p99 {:.1} ms, {} bad signatures",
            d.events, d.per_s, d.p50_ms, d.p99_ms, d.bad_signatures
        );
        results["deliveries"] = deliveries;
    }
    drop(peers);
    drop(hub);
    if let Some(db) = database {
        db.drop_now().await;
    }

    if args.baseline {
        for mode in [BaselineMode::Parse, BaselineMode::Validate] {
            let log = tmp.path().join(format!("baseline-{}.log", mode.as_str()));
            let server =
                spawn(&["bench-baseline", "--mode", mode.as_str()], &config, &data, "baseline listening", &log, &[])?;
            let gen = Arc::new(records::Generator::new(args.scenario));
            let r = load.run(&clients, std::slice::from_ref(&server.url), gen).await?;
            compare(&mut results, &hub_result, &format!("bare TLS {}", mode.as_str()), &r, mode.as_str(), "baseline");
        }
    }
    for &p in &args.peer {
        let (key, name) = p.names();
        let r = p.run(&args).await.with_context(|| format!("--peer {key}"))?;
        compare(&mut results, &hub_result, name, &r, key, "peer");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    println!("{}", serde_json::to_string(&results)?);
    if hub_result.errors > 0 {
        bail!("{} requests failed (see the hub log)", hub_result.errors);
    }
    Ok(())
}

/// Prints a ceiling's or peer's row and records it with the hub's ratio to it
/// (`{kind}_{key}` and `ratio_to_{key}`).
fn compare(results: &mut Value, hub: &Outcome, name: &str, other: &Outcome, key: &str, kind: &str) {
    print_row(name, other, None);
    let ratio = hub.throughput() / other.throughput().max(1e-9);
    eprintln!("  hub / {name} = {ratio:.2}");
    results[format!("{kind}_{key}")] = other.json();
    results[format!("ratio_to_{key}")] = json!((ratio * 100.0).round() / 100.0);
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1048576.0 * 10.0).round() / 10.0
}

fn print_row(name: &str, r: &Outcome, usage: Option<&proc_stats::Usage>) {
    let q = |p: f64| r.histogram.value_at_quantile(p) as f64 / 1000.0;
    eprintln!(
        "{name:<28} {:>9} req {:>6} err {:>9.0}/s  p50 {:>6.2} p90 {:>6.2} p99 {:>6.2} p99.9 {:>7.2} max {:>7.2} ms{}",
        r.ok + r.errors,
        r.errors,
        r.throughput(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        r.histogram.max() as f64 / 1000.0,
        usage.map_or(String::new(), |u| format!("  rss {:.0} MiB  cpu {:.2} cores", mib(u.peak_rss), u.cores)),
    );
}

/// The config text with `[storage] engine = "postgres"` (URL from `HUB_DATABASE_URL`).
fn with_postgres_engine(text: &str) -> String {
    if text.contains("engine = \"sqlite\"") {
        text.replacen("engine = \"sqlite\"", "engine = \"postgres\"", 1)
    } else {
        text.replacen("[storage]\n", "[storage]\nengine = \"postgres\"\n", 1)
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
