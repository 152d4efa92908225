//! The command line as operators use it: `hub config check` lists every problem with file and
//! line, usage errors exit 2, runtime errors exit 1 with one clear line, and the PKI commands
//! write what CONTRACT.md promises.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

const BIN: &str = env!("CARGO_BIN_EXE_hub");

fn hub(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(BIN).args(args).current_dir(harness::root()).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} not in config")) + 1
}

fn last_line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().rposition(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} not in config")) + 1
}

#[test]
fn config_check_accepts_the_conghua_deployment() -> Result<()> {
    let (code, out, err) = hub(&["config", "check"])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("15 departments, 4 operators, 27 record types"), "{out}");
    assert!(out.contains("32 purposes, 20 services"), "{out}");
    assert!(out.contains("warning: purpose \"public-register-check\" is used by no grant"), "{out}");
    assert!(out.contains("2 case types"), "{out}");
    Ok(())
}

#[test]
fn version_names_the_commit_and_completions_cover_every_command() -> Result<()> {
    let (code, out, _) = hub(&["--version"])?;
    assert_eq!(code, 0);
    let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(harness::root()).output();
    match head {
        // In a checkout the binary names its commit (a build after a new commit reruns hub/build.rs).
        Ok(h) if h.status.success() => {
            let head = String::from_utf8_lossy(&h.stdout).trim().to_owned();
            assert_eq!(out.trim(), format!("hub {} ({head})", env!("CARGO_PKG_VERSION")));
        }
        _ => assert!(out.starts_with(&format!("hub {} (", env!("CARGO_PKG_VERSION"))), "{out}"),
    }
    for (shell, opening) in [("bash", "_hub()"), ("zsh", "#compdef hub"), ("fish", "complete -c hub")] {
        let (code, out, err) = hub(&["completions", shell])?;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(opening), "{shell}: {out}");
        for sub in ["serve", "config", "report", "documents-spared", "migrate", "dlq"] {
            assert!(out.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    assert_eq!(hub(&["completions", "tcsh"])?.0, 2, "an unknown shell is a usage error");
    Ok(())
}

#[test]
fn config_check_reports_every_problem_with_file_and_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("config"))?;
    std::os::unix::fs::symlink(harness::root().join("schemas"), dir.path().join("schemas"))?;
    std::os::unix::fs::symlink(harness::root().join("config/samples"), dir.path().join("config/samples"))?;
    std::os::unix::fs::symlink(harness::root().join("config/calendar"), dir.path().join("config/calendar"))?;
    let text = std::fs::read_to_string(harness::conghua_config())?
        .replace("department = \"hrss\"\nrecord_type = \"marriage-registration\"", "department = \"hrs\"\nrecord_type = \"marriage-registration\"")
        .replace("\"/registration_no\", \"/taxpayer_id\"", "\"/registration_no\", \"/taxpayer_iq\"")
        .replace("purposes = [\"enterprise-service\"]", "purposes = [\"Enterprise Service\"]")
        .replace("sharing = \"unconditional\"", "sharing = \"none\"")
        .replace("owner = \"health\"", "owner = \"hospital\"")
        + "\n[[grants]]\ndepartment = \"education\"\nrecord_type = \"doctor-practice-registration\"\npurposes = [\"school-clinic\"]\nfields = [\"/doctor_name\"]\n";
    let cfg = dir.path().join("config/broken.toml");
    std::fs::write(&cfg, &text)?;
    let (code, out, err) = hub(&["config", "check", "--config", cfg.to_str().unwrap()])?;
    assert_eq!(code, 1, "{out}{err}");
    let file = cfg.display().to_string();
    let expect = [
        (line_of(&text, "department = \"hrs\""), "\"hrs\" is not a department"),
        (line_of(&text, "/taxpayer_iq"), "/taxpayer_iq does not exist in the schema"),
        (line_of(&text, "Enterprise Service"), "must be kebab-case"),
        (line_of(&text, "owner = \"hospital\""), "owner \"hospital\" is not a department"),
        (last_line_of(&text, "record_type = \"doctor-practice-registration\""), "cannot be granted"),
    ];
    for (line, message) in expect {
        let wanted = format!("{file}:{line}: ");
        assert!(
            err.lines().any(|l| l.starts_with(&wanted) && l.contains(message)),
            "missing `{wanted}… {message}` in:\n{err}"
        );
    }
    assert!(err.contains("problem(s) in the configuration"));
    assert!(!err.contains("panicked"));

    // The same problems as one JSON document, for CI and editors.
    let (code, out, err) = hub(&["config", "check", "--config", cfg.to_str().unwrap(), "--format", "json"])?;
    assert_eq!(code, 1, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(doc["ok"], false);
    let problems = doc["problems"].as_array().expect("problems");
    for (line, message) in [
        (line_of(&text, "department = \"hrs\""), "\"hrs\" is not a department"),
        (line_of(&text, "owner = \"hospital\""), "owner \"hospital\" is not a department"),
    ] {
        let located = |p: &serde_json::Value| {
            p["file"] == file.as_str()
                && p["line"] == line
                && p["message"].as_str().is_some_and(|m| m.contains(message))
        };
        assert!(problems.iter().any(located), "{doc}");
    }
    let (code, out, err) =
        hub(&["config", "check", "--config", harness::conghua_config().to_str().unwrap(), "--format", "json"])?;
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!((doc["ok"].clone(), doc["counts"]["services"].clone()), (true.into(), 20.into()), "{doc}");
    Ok(())
}

#[test]
fn every_adapter_example_checks_and_a_broken_mapping_is_located() -> Result<()> {
    let examples = harness::root().join("config/examples");
    for name in ["file_drop.toml", "sql_table.toml", "amqp.toml"] {
        let example = std::fs::read_to_string(examples.join(name))?;
        let (_dir, cfg) = harness::TestConfig::conghua().append(&example).write();
        let (code, out, err) = hub(&["config", "check", "--config", cfg.to_str().unwrap()])?;
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains("1 inbound connections"), "{name}: {out}");
    }
    // The mapping of State Tax's staging rows, with a field the schema does not know, and an
    // outbound mapping that fails on the schema's own example.
    let (_dir, cfg) = harness::TestConfig::conghua_with_exchange(&["state-tax-staging", "tax-to-civil-affairs-table"])
        .replace(
            "registered_on: .djrq, tax_authority: .swjg,",
            "registered_on: .djrq, tax_authority: .swjg, djjg: .swjg,",
        )
        .replace("{ djxh: .registration_no,", "{ djxh: (.registration_no | tonumber),")
        .write();
    let text = std::fs::read_to_string(&cfg)?;
    let (code, out, err) = hub(&["config", "check", "--config", cfg.to_str().unwrap()])?;
    assert_eq!(code, 1, "{out}{err}");
    let file = cfg.display().to_string();
    for (line, message) in [
        (line_of(&text, "name = \"state-tax-staging\"") + 5, "the mapped mapping_example does not validate: /djjg"),
        (line_of(&text, "name = \"tax-to-civil-affairs-table\"") + 6, "mapping fails on example typical.json"),
    ] {
        let wanted = format!("{file}:{line}: ");
        assert!(
            err.lines().any(|l| l.starts_with(&wanted) && l.contains(message)),
            "missing `{wanted}… {message}` in:\n{err}"
        );
    }
    Ok(())
}

#[test]
fn usage_and_runtime_errors_exit_2_and_1_with_one_clear_line() -> Result<()> {
    let (code, _, err) = hub(&["serve", "--no-such-flag"])?;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = hub(&["config", "check", "--config", "/nonexistent/hub.toml"])?;
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/hub.toml"));
    let (code, _, err) = hub(&["audit", "verify", "--data", "/nonexistent"])?;
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let syntax = tempfile::NamedTempFile::new()?;
    std::fs::write(syntax.path(), "[hub]\nname = \"x\"\n[server\n")?;
    let (code, _, err) = hub(&["config", "check", "--config", syntax.path().to_str().unwrap()])?;
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:3:", syntax.path().display())), "{err}");
    Ok(())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn pki_init_and_issue_write_certificates_with_private_keys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().unwrap();
    let (code, out, err) = hub(&["pki", "init", "--data", data])?;
    assert_eq!(code, 0, "{out}{err}");
    let pki = dir.path().join("pki");
    for f in ["ca.crt", "ca.key", "server.crt", "server.key", "clients/civil-affairs.crt", "clients/citizen-portal.key"]
    {
        assert!(pki.join(f).exists(), "{f}");
    }
    for f in ["ca.key", "server.key", "clients/civil-affairs.key", "clients/supervision.key"] {
        assert_eq!(mode(&pki.join(f)), 0o600, "{f}");
    }
    let before = std::fs::read(pki.join("clients/hrss.crt"))?;
    let (code, _, err) = hub(&["pki", "issue", "--data", data, "--name", "hrss"])?;
    assert_eq!(code, 0, "{err}");
    assert_ne!(std::fs::read(pki.join("clients/hrss.crt"))?, before, "re-issued");
    let der = rustls_pem_first(&pki.join("clients/hrss.crt"));
    assert_eq!(hub::pki::common_name(&der).as_deref(), Some("hrss"));
    let (code, _, err) = hub(&["pki", "issue", "--data", data, "--name", "mallory"])?;
    assert_eq!(code, 1);
    assert!(err.contains("not a department or operator"), "{err}");
    Ok(())
}

/// `pki issue --p12-password-env` writes a key store that the real OpenSSL opens with that
/// password and no other, holding the certificate just issued and the CA; without the password
/// in the environment nothing is issued.
#[test]
fn pki_issue_writes_a_pkcs12_key_store_openssl_reads() -> Result<()> {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(std::env::var_os("HUB_TEST_REQUIRE_CLIENTS").is_none(), "openssl is missing");
        eprintln!("skipped: the PKCS#12 key store read by OpenSSL (openssl is not installed)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().unwrap();
    assert_eq!(hub(&["pki", "init", "--data", data])?.0, 0);
    let pki = dir.path().join("pki");
    let before = std::fs::read(pki.join("clients/hrss.crt"))?;
    let issue = |password: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["pki", "issue", "--data", data, "--name", "hrss", "--p12-password-env", "HUB_TEST_P12"]);
        cmd.current_dir(harness::root()).env_remove("HUB_TEST_P12");
        if let Some(p) = password {
            cmd.env("HUB_TEST_P12", p);
        }
        cmd.output()
    };
    let out = issue(None)?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HUB_TEST_P12"), "{out:?}");
    assert_eq!(std::fs::read(pki.join("clients/hrss.crt"))?, before, "nothing issued without the password");
    assert!(!pki.join("clients/hrss.p12").exists());

    let out = issue(Some("correct horse battery staple"))?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let p12 = pki.join("clients/hrss.p12");
    assert_eq!(mode(&p12), 0o600);
    let openssl = |password: &str| {
        Command::new("openssl")
            .args(["pkcs12", "-in", p12.to_str().unwrap(), "-passin", "env:P12", "-nodes"])
            .env("P12", password)
            .output()
    };
    let wrong = openssl("wrong")?;
    assert!(!wrong.status.success(), "a wrong password opened it");
    let right = openssl("correct horse battery staple")?;
    assert!(right.status.success(), "{}", String::from_utf8_lossy(&right.stderr));
    let pem = String::from_utf8(right.stdout)?;
    let body = |text: &str| text.lines().filter(|l| !l.starts_with("-----") && !l.contains(':')).collect::<String>();
    let cert = std::fs::read_to_string(pki.join("clients/hrss.crt"))?;
    let ca = std::fs::read_to_string(pki.join("ca.crt"))?;
    assert!(body(&pem).contains(&body(&cert)), "the issued certificate is in the store");
    assert!(body(&pem).contains(&body(&ca)), "the CA is in the store");
    assert!(pem.contains("PRIVATE KEY"), "the key is in the store");
    Ok(())
}

fn rustls_pem_first(path: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}
