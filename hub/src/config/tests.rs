//! The configuration's checks, each problem with its line.

use super::*;

#[test]
fn kebab() {
    assert!(is_kebab("civil-affairs"));
    assert!(is_kebab("hrss"));
    assert!(!is_kebab("Civil"));
    assert!(!is_kebab("a--b"));
    assert!(!is_kebab("-a"));
    assert!(!is_kebab(""));
}

#[test]
fn syntax_error_names_the_line() {
    let err = Config::parse(Path::new("x.toml"), "[hub]\nname = \"a\"\n[server]\nlisten = 5\n".into()).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("x.toml:4: "), "{text}");
}

#[test]
fn unknown_key_is_an_error() {
    let err = Config::parse(Path::new("x.toml"), "[hub]\nname = \"a\"\ncolour = \"red\"\n".into()).unwrap_err();
    assert!(err.to_string().contains("x.toml:3:"), "{err}");
}

#[test]
fn every_cross_check_problem_is_reported_with_its_line() {
    let text = r#"[hub]
name = "t"
[[departments]]
id = "a"
name = "A"
[[departments]]
id = "a"
name = "A again"
[[record_types]]
id = "r"
owner = "nobody"
schema = "s.json"
key = "/k/*"
subjects = ["no-slash"]
sharing = "none"
[[grants]]
department = "ghost"
record_type = "r"
purposes = ["Bad Purpose"]
fields = ["/k"]
expires = "someday"
"#;
    let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
    let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![7, 11, 13, 14, 17, 18, 19, 21], "{problems:#?}");
}

#[test]
fn a_zero_rate_limit_is_refused_with_its_line() {
    let text = r#"[hub]
name = "t"
[[departments]]
id = "civil-affairs"
name = "民政局"
rate_limit = { per_second = 0 }
"#;
    let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
    let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
    let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(found, [(6, "rate_limit per_second and burst must be at least 1")]);
}

#[test]
fn a_misspelt_threshold_is_refused_with_its_line_and_the_names_the_kind_takes() {
    let text = r#"[hub]
name = "t"
[[checks]]
name = "backlog"
kind = "delivery_backlog"
schedule = "0 * * * * *"
thresholds = { warn_pendng = 5 }
[[checks]]
name = "chain"
kind = "audit_chain"
schedule = "0 0 * * * *"
thresholds = { warn_entries = 1 }
[[checks]]
name = "disk"
kind = "storage"
schedule = "0 * * * * *"
thresholds = { warn_free_percent = "twenty" }
[[checks]]
name = "probe"
kind = "synthetic"
schedule = "0 * * * * *"
thresholds = { warn_ms = 2000, critical_ms = 10000 }
"#;
    let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
    let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
    let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(found.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [7, 12, 17], "{found:#?}");
    assert!(found[0].1.contains("\"backlog\" (delivery_backlog)") && found[0].1.contains("warn_pendng"), "{found:?}");
    assert!(found[0].1.contains("warn_pending"), "the known names are listed: {found:?}");
    assert!(found[1].1.contains("warn_entries"), "{found:?}");
    assert!(found[2].1.contains("warn_free_percent"), "{found:?}");
}

#[test]
fn a_zero_wal_bound_is_refused_with_its_line() {
    let text = r#"[hub]
name = "t"
[storage]
max_wal_mib = 0
"#;
    let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
    let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
    let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(found, [(4, "max_wal_mib must be between 1 and 1048576 (MiB)")]);
}

#[test]
fn postgres_refuses_a_backup_check_and_a_lease_shorter_than_an_attempt_with_their_lines() {
    let text = r#"[hub]
name = "t"
[storage]
engine = "postgres"
[delivery]
attempt_timeout_secs = 30
lease_secs = 30
[[checks]]
name = "nightly"
kind = "backup"
schedule = "0 0 2 * * *"
backup = { dir = "backups", keep = 7 }
"#;
    let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
    let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
    let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|(_, m)| m.starts_with("delivery lease_secs must be longer")), "{found:?}");
    assert!(found.iter().any(|(l, m)| *l == 10 && m.starts_with("a backup check copies the SQLite database")));
}

#[test]
fn full_every_belongs_to_the_audit_chain_check_only() {
    let text = r#"[hub]
name = "t"
[[checks]]
name = "chain"
kind = "audit_chain"
schedule = "0 0 * * * *"
full_every = 0
[[checks]]
name = "disk"
kind = "storage"
schedule = "0 * * * * *"
full_every = 3
"#;
    let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
    let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
    let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(
        found,
        [(7, "full_every must be at least 1"), (12, "only an audit_chain check takes full_every")],
        "{problems:#?}"
    );
}

#[test]
fn every_problem_of_a_case_type_names_its_line() {
    let text = r#"[hub]
name = "t"
[[departments]]
id = "a"
name = "A"
[[departments]]
id = "b"
name = "B"
[[subscriptions]]
name = "to-a"
department = "a"
record_type = "hub.case-event"
purpose = "p"
adapter = "feed"
[[case_types]]
id = "c"
title = "C"
openers = ["b"]
application = "x/v1/schema.json"
purpose = "p"
reply = "to-a"
escalation = { after_days = 0, to = "nobody" }
[[case_types.steps]]
id = "one"
department = "a"
completes_with = "no-such-type"
depends_on = ["two"]
time_limit_days = 1
[[case_types.steps]]
id = "two"
department = "ghost"
completes_with = "answer"
depends_on = ["one", "three"]
fields = ["/elsewhere/x", "/steps/two/record/x"]
time_limit_days = 0
"#;
    let err = Config::parse(Path::new("c.toml"), text.into()).unwrap_err();
    let ConfigError::Invalid(problems) = err else { panic!("expected problems") };
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (16, "the steps of \"c\" depend on each other in a circle: one → two → one"),
            (21, "reply \"to-a\" belongs to \"a\", which does not open \"c\""),
            (22, "escalation to \"nobody\": not a department, an auditor or an ops operator"),
            (22, "escalation after_days must be at least 1"),
            (26, "completes_with \"no-such-type\" is neither \"answer\" nor a record type"),
            (31, "step department \"ghost\" is not a department"),
            (33, "depends_on \"three\" is not a step of \"c\""),
            (34, "field \"/elsewhere/x\" must start with /application/ or /steps/<step>/record/"),
            (34, "field \"/steps/two/record/x\": step \"two\" completes with an answer, not a record"),
            (35, "time_limit_days must be at least 1 (working days)"),
        ],
        "{problems:#?}"
    );
}

const REGISTER_BASE: &str = r#"[hub]
name = "t"
[[departments]]
id = "a"
name = "A"
[[departments]]
id = "b"
name = "B"
[[record_types]]
id = "r"
owner = "a"
schema = "s.json"
key = "/k"
sharing = "conditional"
[[record_types]]
id = "secret"
owner = "a"
schema = "s.json"
key = "/k"
sharing = "none"
[[grants]]
department = "b"
record_type = "r"
purposes = ["review"]
fields = ["/k"]
"#;

fn problems_of(text: &str) -> Vec<(usize, String)> {
    match Config::parse(Path::new("c.toml"), text.into()) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(list)) => list.into_iter().map(|p| (p.line, p.message)).collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn without_a_register_the_grants_purposes_are_the_register() {
    let config = Config::parse(Path::new("c.toml"), REGISTER_BASE.into()).unwrap();
    let register = config.purpose_register();
    assert!(!register.declared);
    assert_eq!(register.allows("review", "b"), Ok(()));
    assert_eq!(register.allows("review", "a"), Err(true));
    assert_eq!(register.allows("gossip", "b"), Err(false));
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].message.contains("no [[purposes]] register"), "{warnings:?}");
}

#[test]
fn a_declared_register_is_the_only_one_and_every_stated_purpose_must_be_in_it() {
    let declared = format!(
        "{REGISTER_BASE}[[purposes]]\nid = \"review\"\nbasis = \"a law\"\ndepartments = [\"a\"]\n\
         [[purposes]]\nid = \"unused\"\nbasis = \"another law\"\ndepartments = [\"b\"]\n\
         [[purposes]]\nid = \"Bad\"\nbasis = \" \"\ndepartments = [\"ghost\"]\n"
    );
    let problems = problems_of(&declared);
    let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("\"review\" is not declared for \"b\"")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("must be kebab-case")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("legal basis")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("\"ghost\" is not a department")), "{messages:?}");
    // The grant's purpose line is where the problem is.
    assert!(problems.iter().any(|(line, m)| *line == 24 && m.contains("not declared")), "{problems:?}");

    let fixed = declared.replace("departments = [\"a\"]", "departments = [\"b\"]").replace(
        "id = \"Bad\"\nbasis = \" \"\ndepartments = [\"ghost\"]",
        "id = \"bad\"\nbasis = \"x\"\ndepartments = [\"a\"]",
    );
    let config = Config::parse(Path::new("c.toml"), fixed).unwrap();
    assert!(config.purpose_register().declared);
    let warnings: Vec<String> = config.warnings().into_iter().map(|w| w.message).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().all(|w| w.contains("is used by no grant")), "{warnings:?}");
    assert!(warnings[0].contains("\"unused\""), "{warnings:?}");
}

#[test]
fn a_service_reads_only_what_its_department_may_read_and_names_the_paper_it_replaces() {
    let text = format!(
        "{REGISTER_BASE}[[services]]\nid = \"s\"\nname = \"S\"\ndepartment = \"b\"\nproduces = [\"r\"]\nreads = [\n\
         {{ record_type = \"r\", purpose = \"review\", replaces = [\"a copy\"] }},\n\
         {{ record_type = \"r\", purpose = \"other\", replaces = [\"a copy\"] }},\n\
         {{ record_type = \"secret\", purpose = \"review\", replaces = [] }},\n]\n\
         [[services]]\nid = \"t\"\nname = \"T\"\ndepartment = \"b\"\nreads = [\n\
         {{ record_type = \"r\", purpose = \"review\", replaces = [\"the same copy\"] }},\n]\n"
    );
    let problems = problems_of(&text);
    let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("\"r\" is published by \"a\", not by \"b\"")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("no grant on \"r\" for purpose \"other\"")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("not shared")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("paper documents it replaces")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("service \"s\" already reads \"r\"")), "{messages:?}");
    assert_eq!(problems.len(), 5, "{problems:?}");
}
