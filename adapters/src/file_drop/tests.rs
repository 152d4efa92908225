use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::*;
use crate::testkit::{run_inbound_conformance, run_target_conformance, InboundUpstream, OutboundTarget};

fn inbound(dir: &Path, encoding: Encoding, complete: Complete) -> FileDropInbound {
    FileDropInbound { dir: dir.display().to_string(), encoding, complete, poll_ms: 20, batch: 2 }
}

struct Folder {
    root: tempfile::TempDir,
    complete: Complete,
    files: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl InboundUpstream for Folder {
    async fn offer(&self, records: &[Value]) {
        let n = self.files.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let inbox = self.root.path().join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let body: String = records.iter().map(|r| format!("{r}\n")).collect();
        let name = format!("drop-{n:03}.ndjson");
        // Written under a temporary name and renamed, as the department's side is told to.
        std::fs::write(inbox.join(format!("{name}.part")), body).unwrap();
        std::fs::rename(inbox.join(format!("{name}.part")), inbox.join(&name)).unwrap();
        if self.complete == Complete::Marker {
            std::fs::write(inbox.join(format!("{name}.done")), b"").unwrap();
        }
    }

    async fn pending(&self) -> usize {
        let Ok(dir) = std::fs::read_dir(self.root.path().join("inbox")) else { return 0 };
        dir.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "ndjson"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().filter(|l| !l.trim().is_empty()).count())
            .sum()
    }

    fn adapter(&self) -> Box<dyn crate::Inbound> {
        Box::new(FileDropSource::new(
            self.root.path().to_owned(),
            inbound(self.root.path(), Encoding::Utf8, self.complete),
        ))
    }
}

#[tokio::test]
async fn inbound_passes_the_conformance_suite_with_renames_and_with_markers() {
    for complete in [Complete::Rename, Complete::Marker] {
        let folder = Folder { root: tempfile::tempdir().unwrap(), complete, files: Default::default() };
        run_inbound_conformance(&folder).await;
        let processed = std::fs::read_dir(folder.root.path().join("processed")).unwrap().count();
        let rejected = std::fs::read_dir(folder.root.path().join("rejected")).unwrap().count();
        assert_eq!((processed, rejected), (3, 1), "{complete:?}: every file is filed once");
        let leftover: Vec<PathBuf> =
            std::fs::read_dir(folder.root.path().join("inbox")).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(leftover.is_empty(), "{complete:?}: inbox emptied, markers removed: {leftover:?}");
    }
}

#[test]
fn gb18030_csv_rows_become_objects_with_their_line_numbers() {
    let text = "统一社会信用代码,名称,登记日期\n91440101MA59XXXX0X,从化区某某农业发展有限公司,2026-03-01\n\"x\",\"多余\",\"a\",\"b\"\n91440101MA5AAAAA1A,,2026-04-02\n";
    let (bytes, _, unmappable) = encoding_rs::GB18030.encode(text);
    assert!(!unmappable);
    let lines = inbound::parse("企业.csv", &bytes, Encoding::Gb18030).unwrap();
    let got: Vec<(usize, Option<Value>)> = lines
        .iter()
        .map(|l| match l {
            inbound::Line::Record { line, body } => (*line, Some(serde_json::from_slice(body).unwrap())),
            inbound::Line::Bad { line, .. } => (*line, None),
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                2,
                Some(
                    json!({"统一社会信用代码": "91440101MA59XXXX0X", "名称": "从化区某某农业发展有限公司", "登记日期": "2026-03-01"})
                )
            ),
            (3, None),
            (4, Some(json!({"统一社会信用代码": "91440101MA5AAAAA1A", "登记日期": "2026-04-02"}))),
        ]
    );
    // The same bytes read as UTF-8 are refused as a whole, saying why.
    let err = inbound::parse("企业.csv", &bytes, Encoding::Utf8).unwrap_err();
    assert!(err.contains("not valid UTF-8"), "{err}");
    assert!(inbound::parse("dup.csv", b"a,a\n1,2\n", Encoding::Utf8).unwrap_err().contains("twice"));
}

struct OutFolder {
    root: tempfile::TempDir,
}

#[async_trait]
impl OutboundTarget for OutFolder {
    fn adapter(&self) -> Box<dyn crate::Outbound> {
        Box::new(FileDropSink::new(self.root.path().join("out"), 3))
    }
    fn unreachable(&self) -> Box<dyn crate::Outbound> {
        // A path under a regular file can never be created.
        let file = self.root.path().join("not-a-folder");
        std::fs::write(&file, b"").unwrap();
        Box::new(FileDropSink::new(file.join("out"), 3))
    }
    async fn received(&self) -> Vec<String> {
        let dir = self.root.path().join("out");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut manifests: Vec<(String, Value)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
            .map(|e| {
                let m: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                (m["written_at"].as_str().unwrap().to_owned(), m)
            })
            .collect();
        manifests.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ids = Vec::new();
        for (_, m) in manifests {
            let data = std::fs::read(dir.join(m["file"].as_str().unwrap())).unwrap();
            let sha: String = sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(m["sha256"], sha, "the manifest's digest matches its file");
            let lines: Vec<Value> = data
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            assert_eq!(m["count"], lines.len(), "the manifest's count matches its file");
            ids.extend(lines.iter().map(|l| l["id"].as_str().unwrap().to_owned()));
        }
        ids
    }
    fn dedupes(&self) -> bool {
        true
    }
    async fn lose(&self, id: &str) {
        let out = self.root.path().join("out");
        for e in std::fs::read_dir(&out).unwrap() {
            let path = e.unwrap().path();
            if path.to_string_lossy().ends_with(".ndjson") && std::fs::read_to_string(&path).unwrap().contains(id) {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn read_back_trusts_intact_files_in_the_folder_and_in_taken_only() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let sink = FileDropSink::new(out.clone(), 3);
    let (a, b, c) = (crate::testkit::envelope(1), crate::testkit::envelope(2), crate::testkit::envelope(3));
    for e in [&a, &b, &c] {
        assert_eq!(sink.deliver(std::slice::from_ref(e)).await, crate::Outcome::Delivered);
    }
    let ids: Vec<String> = [&a, &b, &c].iter().map(|e| e.id().to_owned()).collect();
    // The department moved one file away after taking it, and another changed under it.
    std::fs::create_dir_all(out.join(outbound::TAKEN)).unwrap();
    for suffix in [".ndjson", ".manifest.json"] {
        let name = format!("events-{}{suffix}", b.id());
        std::fs::rename(out.join(&name), out.join(outbound::TAKEN).join(&name)).unwrap();
    }
    let edited = out.join(format!("events-{}.ndjson", c.id()));
    std::fs::write(&edited, std::fs::read_to_string(&edited).unwrap().replace("2026", "2025")).unwrap();
    let got = sink.holdings(&ids).await.unwrap().unwrap();
    let mut held: Vec<&str> = got.held.iter().map(String::as_str).collect();
    held.sort();
    let mut want = vec![a.id(), b.id()];
    want.sort();
    assert_eq!(held, want, "the moved file counts, the edited one does not");
    assert_eq!(got.damaged, [format!("events-{}.ndjson", c.id())]);
}

use sha2::Digest as _;

#[tokio::test]
async fn outbound_passes_the_target_conformance_suite() {
    run_target_conformance(&OutFolder { root: tempfile::tempdir().unwrap() }).await;
}
