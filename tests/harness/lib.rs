//! The harness the end-to-end suites share: starts a real hub over real HTTPS (in-process, or as
//! the real binary for crash and restart tests), with certificates made by the hub's own PKI
//! code, and builds mutual-TLS clients for any principal. Test data comes with valid check digits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hub::api::AppState;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The repository root (where `config/` and `schemas/` live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Conghua deployment config.
pub fn conghua_config() -> PathBuf {
    root().join("config/conghua.toml")
}

/// The Conghua config with edits (receiver ports, faster backoff), written into a folder that
/// also links `schemas/`, so relative schema paths resolve as in the repository.
pub struct TestConfig {
    text: String,
}

impl TestConfig {
    /// Starts from `config/conghua.toml`, without its front-end exchange connections (the
    /// `sql_table`, `amqp` and `file_drop` subscriptions and every `[[inbound]]`): they reach the
    /// machine's databases and broker, which only the exchange suites set up.
    pub fn conghua() -> Self {
        Self::conghua_with_exchange(&[])
    }

    /// Starts from `config/conghua.toml` with only the named front-end exchange connections
    /// (inbound connections and `sql_table`/`amqp`/`file_drop` subscriptions, by name).
    pub fn conghua_with_exchange(keep: &[&str]) -> Self {
        Self { text: std::fs::read_to_string(conghua_config()).expect("config/conghua.toml") }.keep_exchange(keep)
    }

    fn keep_exchange(mut self, keep: &[&str]) -> Self {
        self.text = hub::config::text::keep_exchange(&self.text, keep);
        self
    }

    /// Replaces text (panics if it is absent, so a stale test cannot silently test nothing).
    pub fn replace(mut self, from: &str, to: &str) -> Self {
        assert!(self.text.contains(from), "{from:?} is not in the config");
        self.text = self.text.replace(from, to);
        self
    }

    /// Adds text at the end (after the `[[checks]]`, as further top-level tables).
    pub fn append(mut self, text: &str) -> Self {
        self.text.push('\n');
        self.text.push_str(text);
        self
    }

    /// Points a webhook port of the config (`127.0.0.1:91NN`) at a test receiver's URL: the
    /// department's record events and, where it has them, its case events.
    pub fn receiver(mut self, port: u16, receiver_url: &str) -> Self {
        self.text = self.text.replace(&format!("http://127.0.0.1:{port}/hub/cases"), receiver_url);
        self.replace(&format!("http://127.0.0.1:{port}/hub/events"), receiver_url)
    }

    /// Drops `[ops]` and the `[[checks]]` (they end the file): no health pings reach the test's
    /// receivers.
    pub fn without_checks(mut self) -> Self {
        assert!(self.text.contains("\n[ops]\n"), "an [ops] section");
        self.text = hub::config::text::without_checks(&self.text);
        self
    }

    /// Keeps only the named subscription (after [`TestConfig::without_checks`], the
    /// `[[subscriptions]]` tables end the file).
    pub fn only_subscription(mut self, name: &str) -> Self {
        assert!(!self.text.contains("\n[[checks]]\n"), "call without_checks first");
        let marker = "\n[[subscriptions]]\n";
        let mut parts = self.text.split(marker);
        let head = parts.next().unwrap_or_default().to_owned();
        let wanted = format!("name = \"{name}\"");
        let kept: Vec<&str> = parts.filter(|block| block.starts_with(&wanted)).collect();
        assert_eq!(kept.len(), 1, "subscription {name} not found");
        self.text = format!("{head}{marker}{}", kept[0]);
        self
    }

    /// Nodes on PostgreSQL with leases short enough that another node takes over a dead one's
    /// deliveries within seconds, one webhook subscription (Family Planning's marriages, sent to
    /// `receiver_url`) and no scheduled checks: the config of the multi-node suites.
    pub fn postgres_nodes(receiver_url: &str) -> Self {
        Self::conghua()
            .receiver(9103, receiver_url)
            .fast_retries()
            .replace("engine = \"sqlite\"", "engine = \"postgres\"")
            .replace("attempt_timeout_secs = 30", "attempt_timeout_secs = 2\nlease_secs = 4\npoll_ms = 200")
            .without_checks()
            .only_subscription("marriage-to-family-planning")
    }

    /// Retries within milliseconds instead of seconds.
    pub fn fast_retries(self) -> Self {
        self.replace("backoff_initial_ms = 1000", "backoff_initial_ms = 20")
            .replace("backoff_max_ms = 300000", "backoff_max_ms = 200")
            .replace("max_attempts = 20", "max_attempts = 1000")
    }

    /// Seals the audit chain with another crypto suite (`sha256-ed25519`, `sm3-sm2`).
    pub fn suite(self, suite: &str) -> Self {
        self.replace("[audit]\n", &format!("[audit]\nsuite = \"{suite}\"\n"))
    }

    /// Writes it; the folder lives as long as the returned guard. `HUB_TEST_SUITE` names the
    /// crypto suite of every hub a suite starts (`ops/test.sh` runs some suites again on the
    /// national one).
    pub fn write(mut self) -> (tempfile::TempDir, PathBuf) {
        if let Some(suite) = std::env::var("HUB_TEST_SUITE").ok().filter(|s| !s.is_empty()) {
            if !self.text.contains("\nsuite = ") {
                self = self.suite(&suite);
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("config")).expect("mkdir");
        std::os::unix::fs::symlink(root().join("schemas"), dir.path().join("schemas")).expect("symlink");
        std::os::unix::fs::symlink(root().join("config/samples"), dir.path().join("config/samples")).expect("symlink");
        std::os::unix::fs::symlink(root().join("config/calendar"), dir.path().join("config/calendar"))
            .expect("symlink");
        let path = dir.path().join("config/conghua.toml");
        std::fs::write(&path, self.text).expect("write config");
        (dir, path)
    }
}

/// Polls `check` until it holds, for at most `limit`. For conditions inside another process or
/// behind the hub's API, where there is no event to await.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The URL of a server a suite needs, from the environment variable `var`; `None` (after saying
/// on stderr that the suite is skipped) when it is not set.
pub fn server(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipped: {var} is not set");
            None
        }
    }
}

/// The development webhook secret the hub created for `env` in its data directory.
pub fn dev_secret(data: &Path, env: &str) -> String {
    std::fs::read_to_string(data.join("keys/webhooks").join(format!("{env}.secret")))
        .expect("development webhook secret")
        .trim()
        .to_owned()
}

/// A resident ID from Conghua (440184) with a correct check character.
pub fn resident_id(birth: &str, seq: u32) -> String {
    let first17 = format!("440184{birth}{:03}", seq % 1000);
    let check = hub::catalog::formats::resident_id_check(&first17).expect("17 digits");
    format!("{first17}{check}")
}

/// A unified social credit code with a correct check character.
pub fn uscc(first17: &str) -> String {
    let check = hub::catalog::formats::uscc_check(first17).expect("17 characters of the alphabet");
    format!("{first17}{check}")
}

/// A valid marriage registration between two people.
pub fn marriage(no: &str, a: &str, b: &str) -> Value {
    json!({
        "registration_no": no, "kind": "marriage", "registered_on": "2026-11-20",
        "registry_office": "从化区民政局婚姻登记处",
        "parties": [
            {"id_number": a, "name": "陈志明", "sex": "male", "birth_date": "1990-03-15",
             "nationality": "CHN", "hukou_address": "广东省广州市从化区街口街道新村路8号"},
            {"id_number": b, "name": "李晓红", "sex": "female", "birth_date": "1992-07-08",
             "nationality": "CHN", "hukou_address": "广东省广州市从化区江埔街道凤院村"}
        ]
    })
}

/// mTLS client for `name` (a department or operator), trusting the hub's CA.
pub fn client_for(data: &Path, name: Option<&str>) -> Result<reqwest::Client> {
    client_presenting(data, name.map(|n| identity_pem(data, n)).transpose()?)
}

/// A client trusting the hub's CA in `data` and presenting `identity` (certificate + key, PEM),
/// whoever issued it: for certificates the hub must refuse.
pub fn client_presenting(data: &Path, identity: Option<Vec<u8>>) -> Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(data.join("pki/ca.crt"))?)?;
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30));
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

/// The development client certificate and key of `name` under `data` (PEM, concatenated).
pub fn identity_pem(data: &Path, name: &str) -> Result<Vec<u8>> {
    let clients = data.join("pki/clients");
    let mut pem = std::fs::read(clients.join(format!("{name}.crt")))?;
    pem.extend(std::fs::read(clients.join(format!("{name}.key")))?);
    Ok(pem)
}

/// A hub running inside the test process, on 127.0.0.1:0, with its own data directory.
pub struct TestHub {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The data directory (kept until drop).
    pub data: tempfile::TempDir,
    /// The running state (store counters, keys).
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    config_dir: Option<tempfile::TempDir>,
}

impl TestHub {
    /// Starts a hub with a copy of the Conghua config (its backups land beside the copy).
    pub async fn start() -> Result<Self> {
        let (dir, config) = TestConfig::conghua().write();
        let mut hub = Self::start_with(&config).await?;
        hub.config_dir = Some(dir);
        Ok(hub)
    }

    /// Starts a hub with a given config.
    pub async fn start_with(config: &Path) -> Result<Self> {
        Self::start_in(config, tempfile::tempdir()?).await
    }

    /// Starts a hub with a given config on a prepared data directory.
    pub async fn start_in(config: &Path, data: tempfile::TempDir) -> Result<Self> {
        let (config, catalog) = hub::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (state, tls) = hub::server::open(config, catalog, data.path()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let run_state = state.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = hub::server::run(run_state, tls, listener, shutdown).await {
                eprintln!("hub stopped with an error: {e}");
            }
        });
        Ok(Self { url, data, state, stop: Some(stop), task: Some(task), config_dir: None })
    }

    /// A client for a principal.
    pub fn client(&self, name: &str) -> Client {
        Client { http: client_for(self.data.path(), Some(name)).expect("client certificate"), url: self.url.clone() }
    }

    /// A client without a certificate.
    pub fn anonymous(&self) -> Client {
        Client { http: client_for(self.data.path(), None).expect("ca"), url: self.url.clone() }
    }

    /// Stops the hub and hands back its data directory (for offline commands).
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        self.halt().await;
        self.data
    }

    /// Stops the hub and waits until the store is flushed.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: String,
    /// Raw body.
    pub text: String,
    /// Body as JSON (Null if it is not JSON).
    pub json: Value,
    /// Every header of the answer.
    pub headers: reqwest::header::HeaderMap,
}

/// An HTTPS client bound to one principal.
#[derive(Clone)]
pub struct Client {
    /// The reqwest client.
    pub http: reqwest::Client,
    /// Base URL.
    pub url: String,
}

impl Client {
    /// Sends a request and reads the whole answer.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply> {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, content_type, text, json, headers })
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(self.http.get(format!("{}{path}", self.url))).await
    }

    /// POST JSON to a path.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body)).await
    }

    /// Publishes a record.
    pub async fn publish(&self, record_type: &str, body: &Value) -> Result<Reply> {
        self.post(&format!("/v1/records/{record_type}"), body).await
    }
}

/// The real `hub` binary running as a child process (for restart and SIGKILL tests).
pub struct HubProcess {
    /// The child.
    pub child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
    config_dir: Option<tempfile::TempDir>,
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl HubProcess {
    /// Starts `bin serve` on `data` and returns once it logs that it listens. Its stderr is
    /// copied to `DATA.log` for post-mortems.
    pub async fn start(bin: &str, data: &Path, port: u16) -> Result<Self> {
        Self::start_with(bin, data, port, &[], &[]).await
    }

    /// Like [`HubProcess::start`], with extra `serve` arguments and environment.
    /// The health checks are left out: their probes and backups would add to the audit chain and
    /// the store that these tests count.
    pub async fn start_with(bin: &str, data: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let (dir, config) = TestConfig::conghua().without_checks().write();
        let mut p = Self::start_config(bin, &config, data, port, args, env).await?;
        p.config_dir = Some(dir);
        Ok(p)
    }

    /// Like [`HubProcess::start_with`], with another config file.
    pub async fn start_config(
        bin: &str,
        config: &Path,
        data: &Path,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        use std::io::{BufRead, Write};
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(data.with_extension("log"))?;
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .arg("--data")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning hub")?;
        let stderr = child.stderr.take().context("stderr")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("hub listening") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let ready = tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(60))).await?;
        let mut p =
            Self { child, url: format!("https://127.0.0.1:{port}"), data: data.to_path_buf(), config_dir: None };
        if ready.is_err() {
            let status = p.child.try_wait()?;
            bail!(
                "hub did not start listening (exit status: {status:?}); see {}",
                data.with_extension("log").display()
            );
        }
        Ok(p)
    }

    /// A client for a principal.
    pub fn client(&self, name: &str) -> Client {
        Client { http: client_for(&self.data, Some(name)).expect("client certificate"), url: self.url.clone() }
    }

    /// Resident set size of the process, in bytes (from /proc).
    pub fn rss_bytes(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .context("VmRSS")?;
        Ok(kb * 1024)
    }

    /// How the process ended, if it has, and the last `lines` lines of its log: what a test
    /// prints when the hub stopped answering.
    pub fn post_mortem(&mut self, lines: usize) -> String {
        let status = self.child.try_wait().ok().flatten();
        let log = std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("hub exit status: {status:?}; the last lines of its log:\n{tail}")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL database of its own for one test, made on the server `HUB_TEST_POSTGRES_URL`
/// names and dropped when the value is dropped, so suites never see each other's rows.
pub struct PgDatabase {
    /// Its URL.
    pub url: String,
    name: String,
    admin: String,
}

impl PgDatabase {
    /// A new, empty database; `None` (after saying so on stderr) when `HUB_TEST_POSTGRES_URL` is
    /// not set.
    pub async fn create(what: &str) -> Result<Option<Self>> {
        let Ok(admin) = std::env::var("HUB_TEST_POSTGRES_URL") else {
            eprintln!("skipped ({what}): HUB_TEST_POSTGRES_URL is not set");
            return Ok(None);
        };
        let tag: u64 = rand_tag();
        let name = format!("hub_t_{tag:016x}");
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&admin).await.context("HUB_TEST_POSTGRES_URL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        conn.close().await?;
        let (base, query) = admin.split_once('?').map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let (server, _) = base.rsplit_once('/').context("HUB_TEST_POSTGRES_URL has no database name")?;
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        Ok(Some(Self { url, name, admin }))
    }
}

fn rand_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs outside any runtime (or inside one that must not block): a thread of its own.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                use sqlx::Connection as _;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// Runs a DDL file's statements (`--` comments dropped) on PostgreSQL.
pub async fn run_sql_pg(pool: &sqlx::PgPool, sql: &str) -> Result<()> {
    for stmt in statements(sql) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(stmt)).execute(pool).await?;
    }
    Ok(())
}

/// The same on MariaDB, which takes one statement per query.
pub async fn run_sql_my(pool: &sqlx::MySqlPool, sql: &str) -> Result<()> {
    for stmt in statements(sql) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(stmt)).execute(pool).await?;
    }
    Ok(())
}

fn statements(sql: &str) -> Vec<String> {
    let without_comments: String =
        sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    without_comments.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A suffix for this run's own table and queue names on the shared servers.
pub fn suffix() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}", std::process::id(), n % 1_000_000)
}

/// Receivers standing in for the three departments that take marriages by webhook (Family
/// Planning on 9103, Public Security on 9102, Land and Housing on 9106), and the Conghua config
/// pointed at them, with fast retries and no scheduled checks.
pub async fn marriage_webhooks() -> ([adapters::testkit::Receiver; 3], TestConfig) {
    use adapters::testkit::Receiver;
    let receivers = [Receiver::start().await, Receiver::start().await, Receiver::start().await];
    let config = TestConfig::conghua()
        .receiver(9103, &receivers[0].url)
        .receiver(9102, &receivers[1].url)
        .receiver(9106, &receivers[2].url)
        .fast_retries()
        .without_checks();
    (receivers, config)
}

/// Whether `signature` (base64, as the hub writes it) signs `message` under the public key file
/// `public_pem` (`DATA/keys/audit-signing.pub`), checked without the hub's code: Ed25519 with
/// ed25519-dalek, SM2 with the OpenSSL command line (SM3, GM/T 0009's default ID), which only
/// takes a DER signature.
pub fn signature_valid(public_pem: &Path, message: &[u8], signature: &str) -> Result<bool> {
    use base64::Engine as _;
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let raw = base64::engine::general_purpose::STANDARD.decode(signature)?;
    let pem = std::fs::read_to_string(public_pem)?;
    if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem) {
        let sig = ed25519_dalek::Signature::from_slice(&raw)?;
        return Ok(key.verify_strict(message, &sig).is_ok());
    }
    anyhow::ensure!(raw.len() == 64, "an SM2 signature is r||s, 64 bytes; got {}", raw.len());
    let dir = tempfile::tempdir()?;
    let (msg, sig) = (dir.path().join("message"), dir.path().join("signature.der"));
    std::fs::write(&msg, message)?;
    std::fs::write(&sig, sm2_signature_der(&raw[..32], &raw[32..]))?;
    let out = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(public_pem)
        .args(["-rawin", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678", "-in"])
        .arg(&msg)
        .arg("-sigfile")
        .arg(&sig)
        .output()
        .context("openssl")?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(said.contains("Signature Verified") || said.contains("Verification Failure"), "openssl: {said}");
    Ok(out.status.success() && said.contains("Signature Verified Successfully"))
}

/// `SEQUENCE { INTEGER r, INTEGER s }` (GM/T 0009's SM2Signature).
fn sm2_signature_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let x = &x[x.iter().position(|b| *b != 0).unwrap_or(x.len() - 1)..];
        let mut v = vec![0x02];
        let pad = x[0] & 0x80 != 0;
        v.push((x.len() + usize::from(pad)) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(x);
        v
    };
    let body = [int(r), int(s)].concat();
    [vec![0x30, body.len() as u8], body].concat()
}
