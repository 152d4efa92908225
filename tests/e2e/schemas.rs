//! Every schema's examples: each `examples/valid` file passes (and has a usable key), each
//! `examples/invalid` file fails, and every record type of the Conghua config has both kinds.

use anyhow::Result;

#[test]
fn every_example_is_judged_as_its_folder_says() -> Result<()> {
    let (config, catalog) = hub::load(&harness::conghua_config()).map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(catalog.iter().count(), config.record_types.len());
    let mut checked = 0;
    for t in catalog.iter() {
        let dir = harness::root().join("schemas").join(&t.id).join(format!("v{}", t.schema_version)).join("examples");
        for (kind, expect_valid) in [("valid", true), ("invalid", false)] {
            let mut seen = 0;
            for entry in std::fs::read_dir(dir.join(kind))? {
                let path = entry?.path();
                let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
                let violations = t.violations(&doc);
                if expect_valid {
                    assert!(violations.is_empty(), "{}: {violations:?}", path.display());
                    assert!(t.key_of(&doc).is_ok(), "{}: no key", path.display());
                    assert!(!t.subjects_of(&doc).is_empty(), "{}: no subjects", path.display());
                } else {
                    assert!(!violations.is_empty(), "{} passed but is in invalid/", path.display());
                    for v in &violations {
                        assert!(v.pointer.is_empty() || v.pointer.starts_with('/'), "{v:?}");
                    }
                }
                seen += 1;
                checked += 1;
            }
            assert!(seen > 0, "{} has no {kind} examples", t.id);
        }
    }
    assert!(checked >= 30, "{checked}");
    Ok(())
}

#[test]
fn every_case_type_application_example_is_judged_as_its_folder_says() -> Result<()> {
    let (config, catalog) = hub::load(&harness::conghua_config()).map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(catalog.cases.iter().count(), config.case_types.len());
    assert!(config.case_types.len() >= 2);
    for t in catalog.cases.iter() {
        let dir = harness::root().join("schemas").join(&t.id).join("v1").join("examples");
        for (kind, expect_valid) in [("valid", true), ("invalid", false)] {
            let mut seen = 0;
            for entry in std::fs::read_dir(dir.join(kind))? {
                let path = entry?.path();
                let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
                let violations = t.application.violations(&doc);
                assert_eq!(violations.is_empty(), expect_valid, "{}: {violations:?}", path.display());
                if expect_valid {
                    assert!(!t.application.subjects_of(&doc).is_empty(), "{}: no subjects", path.display());
                }
                seen += 1;
            }
            assert!(seen > 0, "{} has no {kind} application examples", t.id);
        }
    }
    Ok(())
}
