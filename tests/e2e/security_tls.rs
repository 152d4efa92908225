//! Transport security of the real listener: TLS 1.2 and 1.3 only (a TLS 1.1 client, allowed by
//! its own settings to offer it, is refused by the hub's alert), no plaintext HTTP, and no start
//! on a private key that other users can read. OpenSSL's command line plays the old client;
//! without it the TLS version cases say they skipped.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use harness::TestHub;

const BIN: &str = env!("CARGO_BIN_EXE_hub");

fn s_client(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_1_3_are_spoken_and_plaintext_gets_no_http() -> Result<()> {
    let hub = TestHub::start().await?;
    let port: u16 = hub.url.rsplit(':').next().unwrap_or_default().parse()?;
    let p = port;
    let probe = tokio::task::spawn_blocking(move || {
        (
            s_client(p, &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"]),
            s_client(p, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]),
            s_client(p, &["-tls1_2"]),
            s_client(p, &["-tls1_3"]),
        )
    })
    .await?;
    match probe {
        (Some(v10), Some(v11), Some(v12), Some(v13)) => {
            assert!(!v10.contains("New, TLSv1,") && v10.contains("alert"), "TLS 1.0 must be refused:\n{v10}");
            assert!(!v11.contains("New, TLSv1.1") && v11.contains("alert"), "TLS 1.1 must be refused:\n{v11}");
            assert!(v12.contains("New, TLSv1.2"), "TLS 1.2 is spoken:\n{v12}");
            assert!(v13.contains("New, TLSv1.3"), "TLS 1.3 is spoken:\n{v13}");
        }
        _ => eprintln!("skipped: the TLS version cases need the openssl command"),
    }

    let answer = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf);
        Ok(buf)
    })
    .await??;
    assert!(!answer.starts_with(b"HTTP/"), "plaintext HTTP got an HTTP answer: {:?}", String::from_utf8_lossy(&answer));
    hub.stop().await;
    Ok(())
}

#[test]
fn the_hub_refuses_to_start_on_a_private_key_others_can_read() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (cfg_dir, cfg) = harness::TestConfig::conghua().without_checks().write();
    let init = Command::new(BIN).args(["pki", "init", "--data"]).arg(&data).arg("--config").arg(&cfg).output()?;
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let key = data.join("pki/server.key");
    assert_eq!(std::fs::metadata(&key)?.permissions().mode() & 0o777, 0o600, "written private");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("server.key: readable by other users (mode 644); run chmod 600 on it"), "{err}");
    drop(cfg_dir);
    Ok(())
}
