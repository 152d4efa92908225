//! Takes complete files from the inbox, publishes their lines, writes the result file and files
//! the input away. Each step is safe to repeat, so a crash anywhere only repeats work.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::config::{Complete, Encoding, FileDropInbound};
use crate::fsync::{move_durably, write_atomic};
use crate::{AdapterError, Inbound, RecordSink, SinkError};

const EXTENSIONS: [&str; 3] = ["ndjson", "jsonl", "csv"];
const MARKER: &str = "done";

/// One line of a dropped file: a record to publish, or why it cannot be one.
#[derive(Debug)]
pub(crate) enum Line {
    Record { line: usize, body: Vec<u8> },
    Bad { line: usize, problem: Value },
}

/// The inbound side of an exchange folder.
pub struct FileDropSource {
    root: PathBuf,
    config: FileDropInbound,
}

/// What became of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filed {
    Processed,
    Rejected,
    /// The hub was unavailable: the file stays in the inbox for the next look.
    Later,
}

impl FileDropSource {
    /// A source over `root` (the exchange folder).
    pub fn new(root: PathBuf, config: FileDropInbound) -> Self {
        Self { root, config }
    }

    fn sub(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn ensure_dirs(&self) -> std::io::Result<()> {
        for d in ["inbox", "processed", "rejected", "results"] {
            std::fs::create_dir_all(self.sub(d))?;
        }
        Ok(())
    }

    /// Complete files in the inbox, oldest name first (departments name files by date).
    fn ready(&self) -> std::io::Result<Vec<PathBuf>> {
        let inbox = self.sub("inbox");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&inbox)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if name.starts_with('.') || !EXTENSIONS.contains(&ext) || !path.is_file() {
                continue;
            }
            if self.config.complete == Complete::Marker && !marker(&path).exists() {
                continue;
            }
            files.push(path);
        }
        files.sort();
        Ok(files)
    }

    /// Publishes one file's lines and files it. Returns where it went.
    async fn take(&self, path: &Path, sink: &dyn RecordSink, shutdown: &CancellationToken) -> std::io::Result<Filed> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = tokio::fs::read(path).await?;
        let lines = match parse(&name, &bytes, self.config.encoding) {
            Ok(lines) => lines,
            Err(reason) => {
                let problem = json!({"type": "about:blank", "title": "The file cannot be read", "status": 422,
                    "detail": reason});
                let result = json!({"line": 0, "status": "rejected", "problem": problem});
                self.finish(path, &name, &[result], Filed::Rejected).await?;
                return Ok(Filed::Rejected);
            }
        };
        let mut results: Vec<Value> = Vec::with_capacity(lines.len());
        let mut rejected = false;
        let mut records: Vec<(usize, String, Vec<u8>)> = Vec::new();
        // Whether each line, in file order, was offered (its result is in `outcomes`) or bad.
        let mut offered: Vec<bool> = Vec::new();
        for l in lines {
            match l {
                Line::Record { line, body } => {
                    offered.push(true);
                    records.push((line, format!("file:{name}:{line}"), body));
                }
                Line::Bad { line, problem } => {
                    rejected = true;
                    offered.push(false);
                    results.push(json!({"line": line, "status": "rejected", "problem": problem}));
                }
            }
        }
        let mut outcomes: Vec<Value> = Vec::with_capacity(records.len());
        for chunk in records.chunks(self.config.batch) {
            let items: Vec<(String, Vec<u8>)> = chunk.iter().map(|(_, k, b)| (k.clone(), b.clone())).collect();
            let answers = tokio::select! {
                a = sink.publish_many(&items) => a,
                // Abandoned: the file stays in the inbox and its lines keep their keys.
                _ = shutdown.cancelled() => return Ok(Filed::Later),
            };
            for ((line, _, _), r) in chunk.iter().zip(answers) {
                match r {
                    Ok(receipt) => outcomes.push(json!({"line": line, "status": "published", "receipt": receipt})),
                    Err(SinkError::Rejected { problem }) => {
                        rejected = true;
                        outcomes.push(json!({"line": line, "status": "rejected", "problem": problem}));
                    }
                    Err(SinkError::Unavailable(_)) => return Ok(Filed::Later),
                }
            }
        }
        // Results in line order: bad lines and published ones interleaved as in the file.
        let mut bad = results.into_iter();
        let mut good = outcomes.into_iter();
        let ordered: Vec<Value> = offered.iter().filter_map(|&o| if o { good.next() } else { bad.next() }).collect();
        let filed = if rejected { Filed::Rejected } else { Filed::Processed };
        self.finish(path, &name, &ordered, filed).await?;
        Ok(filed)
    }

    /// Writes the result file, then moves the input (and drops its marker). In that order, so a
    /// file that left the inbox always has its results.
    async fn finish(&self, path: &Path, name: &str, results: &[Value], filed: Filed) -> std::io::Result<()> {
        let mut out = Vec::new();
        for r in results {
            serde_json::to_writer(&mut out, r).map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        let result_path = self.sub("results").join(format!("{name}.result.ndjson"));
        let dest_dir = self.sub(if filed == Filed::Rejected { "rejected" } else { "processed" });
        let (path, complete) = (path.to_owned(), self.config.complete);
        tokio::task::spawn_blocking(move || {
            write_atomic(&result_path, &out)?;
            move_durably(&path, &free_name(&dest_dir, &path))?;
            if complete == Complete::Marker {
                match std::fs::remove_file(marker(&path)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

fn marker(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(MARKER);
    PathBuf::from(s)
}

/// `dir/NAME`, or `dir/NAME.N` when a file of that name was filed before (kept, not overwritten).
fn free_name(dir: &Path, path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let first = dir.join(&name);
    if !first.exists() {
        return first;
    }
    (1..).map(|n| dir.join(format!("{name}.{n}"))).find(|p| !p.exists()).unwrap_or(first)
}

/// Decodes a file and splits it into records: NDJSON lines as they are, CSV rows as objects keyed
/// by the header (empty cells left out, every value a string: the mapping converts types).
pub(crate) fn parse(name: &str, bytes: &[u8], encoding: Encoding) -> Result<Vec<Line>, String> {
    let text: std::borrow::Cow<'_, str> = match encoding {
        Encoding::Utf8 => {
            let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            std::str::from_utf8(b)
                .map_err(|e| format!("the file is not valid UTF-8 (byte {})", e.valid_up_to()))?
                .into()
        }
        Encoding::Gb18030 => encoding_rs::GB18030
            .decode_without_bom_handling_and_without_replacement(bytes)
            .ok_or("the file is not valid GB18030")?,
    };
    if name.ends_with(".csv") {
        parse_csv(&text)
    } else {
        Ok(text
            .split('\n')
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| Line::Record { line: i + 1, body: l.trim_end_matches('\r').as_bytes().to_vec() })
            .collect())
    }
}

fn parse_csv(text: &str) -> Result<Vec<Line>, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("the CSV header cannot be read: {e}"))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    if headers.is_empty() || headers.iter().any(String::is_empty) {
        return Err("the CSV header has an empty column name".into());
    }
    if let Some(dup) = headers.iter().enumerate().find(|(i, h)| headers[..*i].contains(h)).map(|(_, h)| h) {
        return Err(format!("the CSV header names column {dup:?} twice"));
    }
    let mut lines = Vec::new();
    for row in reader.records() {
        match row {
            Ok(row) => {
                let line = row.position().map_or(0, |p| p.line() as usize);
                let obj: serde_json::Map<String, Value> = headers
                    .iter()
                    .zip(row.iter())
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(h, v)| (h.clone(), Value::String(v.to_owned())))
                    .collect();
                match serde_json::to_vec(&obj) {
                    Ok(body) => lines.push(Line::Record { line, body }),
                    Err(e) => lines.push(Line::Bad { line, problem: csv_problem(&e.to_string()) }),
                }
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                let detail = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("the row has {len} fields; the header has {expected_len}")
                    }
                    _ => "the row cannot be read as CSV".to_owned(),
                };
                lines.push(Line::Bad { line, problem: csv_problem(&detail) });
            }
        }
    }
    Ok(lines)
}

fn csv_problem(detail: &str) -> Value {
    json!({"type": "about:blank", "title": "The CSV row cannot be read", "status": 400, "detail": detail})
}

#[async_trait]
impl Inbound for FileDropSource {
    async fn run(&self, sink: Arc<dyn RecordSink>, shutdown: CancellationToken) -> Result<(), AdapterError> {
        self.ensure_dirs().map_err(|e| AdapterError::Build(format!("exchange folder {}: {e}", self.root.display())))?;
        let poll = Duration::from_millis(self.config.poll_ms);
        while !shutdown.is_cancelled() {
            let files = match self.ready() {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(folder = %self.root.display(), error = %e, "cannot list the inbox");
                    Vec::new()
                }
            };
            for path in files {
                if shutdown.is_cancelled() {
                    break;
                }
                match self.take(&path, sink.as_ref(), &shutdown).await {
                    Ok(Filed::Later) => break,
                    Ok(filed) => tracing::info!(folder = %self.root.display(), ?filed, "exchange file taken"),
                    // The file stays in the inbox and is taken again, with the same keys, next time.
                    Err(e) => tracing::warn!(folder = %self.root.display(), error = %e, "exchange file not taken"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), String> {
        let inbox = self.sub("inbox");
        tokio::task::spawn_blocking(move || probe_writable(&inbox)).await.map_err(|e| e.to_string())?
    }
}

/// Creates and removes a hidden file: the folder exists and the hub may write to it.
pub(crate) fn probe_writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(".hub-health-probe");
    std::fs::write(&probe, b"").map_err(|e| format!("folder {} is not writable: {e}", dir.display()))?;
    std::fs::remove_file(&probe).map_err(|e| format!("folder {}: {e}", dir.display()))
}
