//! The plan's online services: the catalogue of who runs each and which shared records it reads
//! instead of a citizen's paper copies, and the signed monthly report of the documents spared,
//! counted from the audit chain's reads and lookups.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use serde_json::{json, Value};

use crate::catalog::Catalog;
use crate::config::{Config, ServiceConfig, Sharing};
use crate::ledger::keys::HubKeys;
use crate::report::{month_bounds, rfc3339, signed, ReportError};
use crate::store::Store;

/// Audit entries read per page while counting.
const PAGE: u32 = 2000;

/// `GET /v1/catalog/services`: every service, its department, what it publishes, what it reads
/// for which purpose and on which footing, and the paper it spares.
pub fn catalogue(config: &Config, catalog: &Catalog) -> Value {
    let services: Vec<Value> = config
        .services
        .iter()
        .map(|s| {
            let dept = s.department.get_ref();
            let reads: Vec<Value> = s
                .reads
                .iter()
                .map(|r| {
                    let t = catalog.get(r.record_type.get_ref());
                    let footing = match t {
                        Some(t) if t.owner == *dept => "own",
                        Some(t) if t.sharing == Sharing::Unconditional => "unconditional",
                        _ => "grant",
                    };
                    let purpose = config.purposes.iter().find(|p| p.id.get_ref() == r.purpose.get_ref());
                    json!({
                        "record_type": r.record_type.get_ref(),
                        "record_type_name": t.map(|t| t.name.clone()),
                        "owner": t.map(|t| t.owner.clone()),
                        "purpose": r.purpose.get_ref(),
                        "basis": purpose.map(|p| p.basis.clone()),
                        "footing": footing,
                        "replaces": r.replaces,
                    })
                })
                .collect();
            let spared: BTreeSet<&str> = s.reads.iter().flat_map(|r| r.replaces.iter().map(String::as_str)).collect();
            json!({
                "id": s.id.get_ref(),
                "name": s.name,
                "name_en": s.name_en,
                "department": {
                    "id": dept,
                    "name": config.department(dept).map(|d| d.name.clone()),
                },
                "produces": s.produces.iter().map(|t| t.get_ref()).collect::<Vec<_>>(),
                "reads": reads,
                "documents_no_longer_brought": spared,
            })
        })
        .collect();
    json!({ "hub": config.hub.name.get_ref(), "count": services.len(), "services": services })
}

/// One service's counts in the month.
#[derive(Default)]
struct Tally {
    reads: u64,
    lookups: u64,
    documents: u64,
    by_read: BTreeMap<(String, String), (u64, u64)>,
}

/// The signed report of documents spared in `month` (YYYY-MM, hub time zone): per service, the
/// reads and lookups its department made for the service's purposes that returned the record
/// type the paper copy stood for, and so how many paper documents citizens did not bring.
/// Counts only: no keys, no subjects.
pub async fn documents_spared(
    store: &dyn Store,
    keys: &HubKeys,
    config: &Config,
    month: &str,
) -> Result<Value, ReportError> {
    let tz = config.timezone();
    let (start, month_end) = month_bounds(tz, month)?;
    let end = month_end.min(Utc::now());
    let (from, to) = (rfc3339(start), rfc3339(end));
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let departments: BTreeSet<&str> = config.services.iter().map(|s| s.department.get_ref().as_str()).collect();
    for dept in departments {
        let services: Vec<&ServiceConfig> = config.services.iter().filter(|s| s.department.get_ref() == dept).collect();
        for action in ["read", "lookup"] {
            let mut after = 0;
            loop {
                let page = store.audit_between(&from, &to, dept, action, after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for e in &page {
                    if e.outcome != "ok" {
                        continue;
                    }
                    let Some(purpose) = e.purpose.as_deref() else { continue };
                    let types = returned_types(e);
                    for s in &services {
                        for r in &s.reads {
                            if r.purpose.get_ref() != purpose || !types.contains(r.record_type.get_ref().as_str()) {
                                continue;
                            }
                            let t = tallies.entry(s.id.get_ref()).or_default();
                            let documents = r.replaces.len() as u64;
                            if action == "read" {
                                t.reads += 1;
                            } else {
                                t.lookups += 1;
                            }
                            t.documents += documents;
                            let cell = t
                                .by_read
                                .entry((r.record_type.get_ref().clone(), r.purpose.get_ref().clone()))
                                .or_default();
                            cell.0 += 1;
                            cell.1 += documents;
                        }
                    }
                }
                if page.len() < PAGE as usize {
                    break;
                }
            }
        }
    }
    let empty = Tally::default();
    let rows: Vec<Value> = config
        .services
        .iter()
        .map(|s| {
            let t = tallies.get(s.id.get_ref().as_str()).unwrap_or(&empty);
            json!({
                "service": s.id.get_ref(),
                "name": s.name,
                "department": s.department.get_ref(),
                "reads": t.reads,
                "lookups": t.lookups,
                "documents_spared": t.documents,
                "by_record_type": t.by_read.iter().map(|((rt, p), (n, d))| json!({
                    "record_type": rt, "purpose": p, "answered": n, "documents_spared": d,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let total: u64 = tallies.values().map(|t| t.documents).sum();
    let report = json!({
        "hub": config.hub.name.get_ref(),
        "kind": "documents-spared",
        "month": month,
        "timezone": tz.name(),
        "period": { "start": from, "end": to, "complete": end == month_end },
        "generated_at": rfc3339(Utc::now()),
        "counting": "one paper document per document a service's read replaces, for each read or lookup by the \
                     service's department for the service's purpose that returned that record type",
        "services": rows,
        "documents_spared": total,
    });
    Ok(signed(report, keys))
}

/// The record types a read or lookup entry returned: a read names its type (when it found the
/// record), a lookup lists `type/key@version` in its detail.
fn returned_types(e: &crate::ledger::Entry) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    if e.action == "read" {
        if let (Some(t), Some(_)) = (&e.record_type, e.record_version) {
            out.insert(t.as_str());
        }
    } else if let Some(records) = e.detail.as_ref().and_then(|d| d["records"].as_array()) {
        for r in records.iter().filter_map(Value::as_str) {
            if let Some((t, _)) = r.split_once('/') {
                out.insert(t);
            }
        }
    }
    out
}

/// A printable page of the signed report.
pub fn html(signed: &Value) -> String {
    let r = &signed["report"];
    let text = |v: &Value| crate::report::esc(v.as_str().unwrap_or_default());
    let rows: String = r["services"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|s| {
                    format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        text(&s["name"]),
                        text(&s["department"]),
                        s["reads"],
                        s["lookups"],
                        s["documents_spared"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{hub} {month} 减少群众提交材料 Documents spared</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:.3em .6em}}\
         td:nth-child(n+3){{text-align:right}}code{{word-break:break-all}}</style></head><body>\
         <h1>减少出门，方便市民: documents spared, {month}</h1>\
         <p>{hub}, {start} to {end} ({tz}). In all <strong>{total}</strong> paper documents citizens did not bring.</p>\
         <table><tr><th>服务 Service</th><th>Department</th><th>Reads</th><th>Lookups</th><th>Documents spared</th></tr>{rows}</table>\
         <p>Signed ({alg}): <code>{sig}</code></p><pre>{key}</pre></body></html>",
        hub = text(&r["hub"]),
        month = text(&r["month"]),
        start = text(&r["period"]["start"]),
        end = text(&r["period"]["end"]),
        tz = text(&r["timezone"]),
        total = r["documents_spared"],
        alg = text(&signed["signature"]["algorithm"]),
        sig = text(&signed["signature"]["value"]),
        key = text(&signed["signature"]["public_key"]),
    )
}
