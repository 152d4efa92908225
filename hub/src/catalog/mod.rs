//! The resource catalogue: every record type with its owner, sharing class, key and subject
//! pointers and its compiled JSON Schema. Validators are compiled once here, at start, so the
//! write path only runs them. Building the catalogue is also where the config's schema-dependent
//! checks happen (does a grant's field exist in the schema?).

pub mod formats;
pub mod pointer;
pub mod strict;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use crate::config::{Config, ConfigError, Problems, Sharing};
use crate::mask;
use pointer::FieldPointer;

/// One schema violation: where, and what is wrong, never the offending value itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Violation {
    /// JSON pointer of the offending (or missing) value.
    pub pointer: String,
    /// What is wrong, with personal data masked.
    pub message: String,
}

/// A record type, ready to validate.
pub struct RecordType {
    /// Id used in URLs.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// The only department allowed to publish it.
    pub owner: String,
    /// Sharing class.
    pub sharing: Sharing,
    /// Pointer of the business key.
    pub key: FieldPointer,
    /// Pointers of the subjects.
    pub subjects: Vec<FieldPointer>,
    /// Version of the current schema (from its `vN` folder).
    pub schema_version: u32,
    /// The schema document.
    pub schema: Arc<Value>,
    validator: jsonschema::Validator,
}

/// Longest accepted record key; keys appear in URLs.
pub const MAX_KEY_LEN: usize = 128;

impl RecordType {
    /// Every violation of the schema, masked.
    pub fn violations(&self, doc: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        for e in self.validator.iter_errors(doc) {
            let base = e.instance_path.as_str().to_owned();
            match &e.kind {
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    out.push(violation(format!("{base}/{}", escape(name)), "is required".into()));
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        out.push(violation(
                            format!("{base}/{}", escape(name)),
                            "is not a property of this record type".into(),
                        ));
                    }
                }
                ValidationErrorKind::Format { format } => {
                    let what = match format.as_str() {
                        "cn-resident-id" => {
                            "is not a valid resident ID number (GB 11643: check character, date of birth, area code)"
                                .to_owned()
                        }
                        "cn-uscc" => {
                            "is not a valid unified social credit code (GB 32100: alphabet, area code, check character)"
                                .to_owned()
                        }
                        "cn-org-code" => {
                            "is not a valid organization code (GB 11714: XXXXXXXX-C, check character)".to_owned()
                        }
                        other => format!("is not a valid {other}"),
                    };
                    out.push(violation(base, what));
                }
                _ => out.push(violation(base, e.masked().to_string())),
            }
        }
        out
    }

    /// What a publish requires of a record: its key when it is valid, otherwise every violation
    /// (the key's own problem once, even when the schema names the same pointer).
    pub fn check(&self, doc: &Value) -> Result<String, Vec<Violation>> {
        let mut violations = self.violations(doc);
        match self.key_of(doc) {
            Ok(key) if violations.is_empty() => Ok(key),
            Ok(_) => Err(violations),
            Err(v) => {
                if !violations.iter().any(|x| x.pointer == v.pointer) {
                    violations.push(v);
                }
                Err(violations)
            }
        }
    }

    /// The record's key, or a violation at the key pointer. Keys are printable ASCII without `/`,
    /// so they can travel in URLs and file names.
    pub fn key_of(&self, doc: &Value) -> Result<String, Violation> {
        let bad = |message: &str| violation(self.key.as_str().to_owned(), message.to_owned());
        match self.key.values(doc).first() {
            Some(Value::String(s)) => {
                if s.is_empty() || s.len() > MAX_KEY_LEN {
                    Err(bad("the record key must be 1 to 128 characters"))
                } else if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
                    Err(bad("the record key may only hold ASCII letters, digits and - _ . :"))
                } else {
                    Ok(s.clone())
                }
            }
            Some(_) => Err(bad("the record key must be a string")),
            None => Err(bad("the record key is missing")),
        }
    }

    /// The identifiers the record concerns, deduplicated, in pointer order.
    pub fn subjects_of(&self, doc: &Value) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.subjects {
            for v in p.values(doc) {
                if let Some(s) = v.as_str() {
                    if !out.iter().any(|o| o == s) {
                        out.push(s.to_owned());
                    }
                }
            }
        }
        out
    }
}

impl RecordType {
    /// A document the hub validates like a record but never stores as one of the catalogue's
    /// types (a case type's application): no owner publishes it and nobody reads it by key.
    pub(crate) fn application(
        id: &str,
        schema: Value,
        schema_version: u32,
        subjects: Vec<FieldPointer>,
        validator: jsonschema::Validator,
    ) -> Self {
        Self {
            id: id.to_owned(),
            name: None,
            owner: String::new(),
            sharing: Sharing::None,
            key: FieldPointer::root(),
            subjects,
            schema_version,
            schema: Arc::new(schema),
            validator,
        }
    }
}

/// A violation with personal data masked in both its pointer (member names can be identifiers)
/// and its message.
pub(crate) fn violation(pointer: String, message: String) -> Violation {
    Violation { pointer: mask::scrub(&pointer), message: mask::scrub(&message) }
}

/// A member name as a JSON pointer step (RFC 6901).
pub(crate) fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// All record types, by id.
pub struct Catalog {
    types: BTreeMap<String, RecordType>,
    /// The joint case types, with their calendar.
    pub cases: crate::cases::CaseTypes,
}

/// A schema validator with the hub's custom formats; offline (no remote `$ref`).
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_format("cn-resident-id", formats::is_resident_id)
        .with_format("cn-uscc", formats::is_uscc)
        .with_format("cn-org-code", formats::is_org_code)
        .build(schema)
        .map_err(|e| mask::scrub(&e.to_string()))
}

/// The schema version encoded in the schema's folder name (`.../v3/schema.json` is version 3).
fn version_of(path: &Path) -> Option<u32> {
    let dir = path.parent()?.file_name()?.to_str()?;
    dir.strip_prefix('v')?.parse().ok().filter(|v| *v > 0)
}

impl Catalog {
    /// Reads and compiles every schema the config names and checks every pointer against them.
    /// Reports all problems at once.
    pub fn build(config: &Config) -> Result<Catalog, ConfigError> {
        let mut problems = Problems::new(&config.path, &config.source);
        let mut types = BTreeMap::new();
        for t in &config.record_types {
            let Some((_, schema_version, schema, validator)) = load_schema(config, &t.schema, &mut problems) else {
                continue;
            };
            let (Ok(key), Ok(subjects)) = (
                FieldPointer::parse(t.key.get_ref()),
                t.subjects.iter().map(|s| FieldPointer::parse(s.get_ref())).collect::<Result<Vec<_>, _>>(),
            ) else {
                continue; // already reported by Config::check
            };
            if !key.exists_in_schema(&schema) {
                problems.at(t.key.span(), format!("key {key} does not exist in the schema"));
            }
            for (s, p) in t.subjects.iter().zip(&subjects) {
                if !p.exists_in_schema(&schema) {
                    problems.at(s.span(), format!("subject {p} does not exist in the schema"));
                }
            }
            types.insert(
                t.id.get_ref().clone(),
                RecordType {
                    id: t.id.get_ref().clone(),
                    name: t.name.clone(),
                    owner: t.owner.get_ref().clone(),
                    sharing: *t.sharing.get_ref(),
                    key,
                    subjects,
                    schema_version,
                    schema: Arc::new(schema),
                    validator,
                },
            );
        }
        for g in &config.grants {
            let Some(t) = types.get(g.record_type.get_ref()) else {
                continue;
            };
            for f in &g.fields {
                if let Ok(p) = FieldPointer::parse(f.get_ref()) {
                    if !p.exists_in_schema(&t.schema) {
                        problems.at(f.span(), format!("field {p} does not exist in the schema of {}", t.id));
                    }
                }
            }
        }
        check_mappings(config, &types, &mut problems);
        let cases = crate::cases::CaseTypes::build(config, &types, &mut problems);
        problems.finish()?;
        Ok(Catalog { types, cases })
    }

    /// A record type by id.
    pub fn get(&self, id: &str) -> Option<&RecordType> {
        self.types.get(id)
    }

    /// Every record type, by id.
    pub fn iter(&self) -> impl Iterator<Item = &RecordType> {
        self.types.values()
    }
}

/// Reads and compiles the schema a config entry names (in a `vN` folder), reporting what is wrong
/// with it: its path, version, schema text and validator.
pub(crate) fn load_schema(
    config: &Config,
    at: &toml::Spanned<String>,
    problems: &mut Problems<'_>,
) -> Option<(PathBuf, u32, Value, jsonschema::Validator)> {
    let path: PathBuf = config.resolve(at.get_ref());
    let Some(schema_version) = version_of(&path) else {
        problems.at(at.span(), "the schema must sit in a folder named vN (N = its version)");
        return None;
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            problems.at(at.span(), format!("cannot read schema {}: {e}", path.display()));
            return None;
        }
    };
    let schema: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            problems.in_file(&path, e.line(), format!("not valid JSON: {e}"));
            return None;
        }
    };
    if schema.get("$schema").and_then(Value::as_str) != Some("https://json-schema.org/draft/2020-12/schema") {
        problems.in_file(&path, 1, "$schema must be https://json-schema.org/draft/2020-12/schema");
    }
    match compile(&schema) {
        Ok(v) => Some((path, schema_version, schema, v)),
        Err(e) => {
            problems.in_file(&path, 1, format!("schema does not compile: {e}"));
            None
        }
    }
}

/// The valid examples next to a schema (`vN/examples/valid/*.json`), by file name.
fn valid_examples(schema: &Path) -> Vec<(String, Value)> {
    let dir = schema.parent().map(|d| d.join("examples").join("valid")).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, Value)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let doc = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), doc))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Field mappings checked against the schema where the config gives something to check with:
/// an outbound mapping must run on every valid example of its type, as projected to the
/// subscriber's grant; an inbound mapping's output on its `mapping_example` must validate.
fn check_mappings(config: &Config, types: &BTreeMap<String, RecordType>, problems: &mut Problems<'_>) {
    use crate::routing::jq::JqProgram;
    for s in &config.subscriptions {
        let (Some(m), Some(t)) = (&s.mapping, types.get(s.record_type.get_ref())) else { continue };
        let Ok(program) = JqProgram::compile(m.get_ref()) else { continue }; // reported by Config::check
        let grant = config.grants.iter().find(|g| {
            g.department.get_ref() == s.department.get_ref()
                && g.record_type.get_ref() == &t.id
                && g.purposes.iter().any(|p| p.get_ref() == s.purpose.get_ref())
        });
        let fields: Option<Vec<FieldPointer>> =
            grant.map(|g| g.fields.iter().filter_map(|f| FieldPointer::parse(f.get_ref()).ok()).collect());
        let schema =
            config.record_types.iter().find(|r| r.id.get_ref() == &t.id).map(|r| config.resolve(r.schema.get_ref()));
        for (file, example) in schema.map(|p| valid_examples(&p)).unwrap_or_default() {
            let doc = match &fields {
                Some(f) => pointer::project(&example, f),
                None => example,
            };
            match program.map(&doc) {
                Ok(out) if out.is_object() => {}
                Ok(_) => problems.at(m.span(), format!("mapping gives no JSON object for example {file}")),
                Err(e) => problems.at(m.span(), format!("mapping fails on example {file}: {e}")),
            }
        }
    }
    for c in &config.inbound {
        let (Some(m), Some(ex), Some(t)) = (&c.mapping, &c.mapping_example, types.get(c.record_type.get_ref())) else {
            continue;
        };
        let Ok(program) = JqProgram::compile(m.get_ref()) else { continue };
        let path = config.resolve(ex.get_ref());
        let sample: Value = match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                problems.at(ex.span(), format!("mapping_example {} is not JSON: {e}", path.display()));
                continue;
            }
            Err(e) => {
                problems.at(ex.span(), format!("cannot read mapping_example {}: {e}", path.display()));
                continue;
            }
        };
        match program.map(&sample) {
            Err(e) => problems.at(m.span(), format!("mapping fails on its mapping_example: {e}")),
            Ok(out) => {
                let mut violations = t.violations(&out);
                if let Err(v) = t.key_of(&out) {
                    violations.push(v);
                }
                for v in violations {
                    problems.at(
                        m.span(),
                        format!("the mapped mapping_example does not validate: {} {}", v.pointer, v.message),
                    );
                }
            }
        }
    }
}
