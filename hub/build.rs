//! Stamps the build's commit into `hub --version`, so an operator can tell which release a node
//! runs. A build outside a git checkout (a source tarball) takes `HUB_BUILD_COMMIT` or says so.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=HUB_BUILD_COMMIT");
    // Rebuilt when HEAD moves: HEAD itself, the branch it names, and packed refs. Only files that
    // exist: cargo takes a missing one as changed, and rebuilt the hub on every call in a clone
    // without packed refs.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]).filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]).filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = std::env::var("HUB_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "commit unknown".to_owned());
    println!("cargo:rustc-env=HUB_BUILD_COMMIT={commit}");
}
