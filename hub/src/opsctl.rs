//! The operator commands of the CLI (`hub status`, `hub checks ...`, `hub dlq ...`): they talk to
//! a running hub over mutual TLS with an operator's certificate, like any other client, and print
//! tables (Chinese names aligned by comfy-table) or the hub's JSON.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::Value;

/// How to reach the hub, and as whom.
pub struct Connection {
    /// `https://HOST:PORT`.
    pub url: String,
    client: reqwest::Client,
}

impl Connection {
    /// Uses `DATA/pki/ca.crt` and the client certificate of `name` from `DATA/pki/clients/`.
    pub fn new(url: String, data: &Path, name: &str) -> anyhow::Result<Self> {
        let pki = data.join("pki");
        let read = |p: PathBuf| std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()));
        let ca = reqwest::Certificate::from_pem(&read(pki.join("ca.crt"))?)?;
        let mut pem = read(pki.join("clients").join(format!("{name}.crt")))?;
        pem.extend(read(pki.join("clients").join(format!("{name}.key")))?);
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(reqwest::Identity::from_pem(&pem)?)
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        Ok(Self { url, client })
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.url))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            bail!("{path}: {} {}", status.as_u16(), detail);
        }
        Ok(body)
    }

    /// GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path).await
    }

    /// POST with an empty JSON body.
    pub async fn post(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path).await
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(header.to_vec());
    t
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `hub status`: overall health, every check, every subscription's backlog.
pub async fn status(c: &Connection, names: &dyn Fn(&str) -> String, json: bool) -> anyhow::Result<String> {
    let health = c.get("/health").await?;
    let subs = c.get("/v1/ops/subscriptions").await?;
    if json {
        return Ok(serde_json::to_string_pretty(
            &serde_json::json!({ "health": health, "subscriptions": subs["subscriptions"] }),
        )?);
    }
    let mut checks = table(&["check", "kind", "status", "time", "output"]);
    if let Some(map) = health["checks"].as_object() {
        for (name, list) in map {
            let e = &list[0];
            checks.add_row(vec![name.clone(), s(&e["componentType"]), s(&e["status"]), s(&e["time"]), s(&e["output"])]);
        }
    }
    let mut backlog = table(&["subscription", "department", "mode", "pending", "dead", "stopped"]);
    for sub in subs["subscriptions"].as_array().into_iter().flatten() {
        let dept = sub["department"].as_str().unwrap_or_default();
        backlog.add_row(vec![
            s(&sub["name"]),
            format!("{dept} {}", names(dept)),
            s(&sub["mode"]),
            s(&sub["pending"]),
            s(&sub["dead"]),
            if sub["disabled"] == true { "yes".into() } else { "no".into() },
        ]);
    }
    Ok(format!("hub {}: {}\n{checks}\n{backlog}", s(&health["serviceId"]), s(&health["status"])))
}

/// `hub cases`: open cases per type, late steps per department, and (for ops and auditors)
/// the late steps, oldest last day first.
pub async fn cases(c: &Connection, names: &dyn Fn(&str) -> String, json: bool) -> anyhow::Result<String> {
    let v = c.get("/v1/ops/cases").await?;
    if json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    let mut open = table(&["case type", "title", "open"]);
    for t in v["case_types"].as_array().into_iter().flatten() {
        open.add_row(vec![s(&t["case_type"]), s(&t["title"]), s(&t["open"])]);
    }
    let mut late = table(&["department", "late steps"]);
    for d in v["late_by_department"].as_array().into_iter().flatten() {
        let dept = d["department"].as_str().unwrap_or_default();
        late.add_row(vec![format!("{dept} {}", names(dept)), s(&d["late"])]);
    }
    let mut out = format!("joint cases on {}\n{open}\n{late}", s(&v["today"]));
    if let Some(steps) = v["late_steps"].as_array().filter(|l| !l.is_empty()) {
        let mut t = table(&["case", "case type", "step", "department", "last day"]);
        for l in steps {
            t.add_row(vec![s(&l["case"]), s(&l["case_type"]), s(&l["step"]), s(&l["department"]), s(&l["due"])]);
        }
        out.push_str(&format!("\n{t}"));
    }
    Ok(out)
}

/// `hub checks list`.
pub async fn checks_list(c: &Connection, json: bool) -> anyhow::Result<String> {
    let v = c.get("/v1/ops/checks").await?;
    if json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    let mut t = table(&["check", "kind", "schedule", "next run", "status", "summary"]);
    for e in v["checks"].as_array().into_iter().flatten() {
        t.add_row(vec![
            s(&e["name"]),
            s(&e["kind"]),
            s(&e["schedule"]),
            s(&e["next_run"]),
            s(&e["latest"]["status"]),
            s(&e["latest"]["summary"]),
        ]);
    }
    Ok(t.to_string())
}

/// `hub checks run NAME`.
pub async fn checks_run(c: &Connection, name: &str, json: bool) -> anyhow::Result<String> {
    let v = c.post(&format!("/v1/ops/checks/{name}/run")).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    Ok(format!("{name}: {} — {} ({} ms)", s(&v["report"]["status"]), s(&v["report"]["summary"]), s(&v["duration_ms"])))
}

/// `hub checks history NAME`.
pub async fn checks_history(c: &Connection, name: &str, json: bool) -> anyhow::Result<String> {
    let v = c.get(&format!("/v1/ops/checks/{name}/history?limit=50")).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    let mut t = table(&["started", "trigger", "status", "ms", "summary"]);
    for r in v["runs"].as_array().into_iter().flatten() {
        t.add_row(vec![s(&r["started"]), s(&r["trigger"]), s(&r["status"]), s(&r["duration_ms"]), s(&r["summary"])]);
    }
    Ok(t.to_string())
}

/// `hub dlq list`: the entries for ops; counts and error texts for the vendor.
pub async fn dlq_list(c: &Connection, subscription: Option<&str>, json: bool) -> anyhow::Result<String> {
    let path = match subscription {
        Some(sub) => format!("/v1/ops/deliveries?state=dead&subscription={sub}"),
        None => "/v1/ops/deliveries?state=dead".to_owned(),
    };
    let v = c.get(&path).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    if let Some(entries) = v["entries"].as_array() {
        let mut t = table(&["id", "subscription", "record", "attempts", "error"]);
        for e in entries {
            let record = format!("{}/{}@{}", s(&e["record_type"]), s(&e["key"]), s(&e["version"]));
            t.add_row(vec![s(&e["id"]), s(&e["subscription"]), record, s(&e["attempts"]), s(&e["last_error"])]);
        }
        return Ok(t.to_string());
    }
    let mut t = table(&["subscription", "error", "count"]);
    for e in v["errors"].as_array().into_iter().flatten() {
        t.add_row(vec![s(&e["subscription"]), s(&e["error"]), s(&e["count"])]);
    }
    Ok(t.to_string())
}

/// `hub dlq retry ID`.
pub async fn dlq_retry(c: &Connection, id: i64) -> anyhow::Result<String> {
    let v = c.post(&format!("/v1/ops/deliveries/{id}/retry")).await?;
    Ok(format!("dead letter {id} of {} is queued again", s(&v["subscription"])))
}
