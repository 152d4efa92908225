//! jq programs (jaq), compiled once when the config loads: subscription filters (a record is
//! routed when the filter's first output is truthy) and field mappings between a department's
//! own shape and a record type's (the first output is the mapped document).

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, ValT, Vars};
use jaq_json::Val;

type Data = data::JustLut<Val>;

/// A compiled jq program: a subscription filter or a field mapping.
pub struct JqProgram {
    filter: jaq_core::compile::Filter<jaq_core::Native<Data>>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JqProgram")
    }
}

impl JqProgram {
    /// Parses and compiles `code` with jq's standard library.
    pub fn compile(code: &str) -> Result<Self, String> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| format!("the filter does not parse ({} error(s))", errs.len()))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| format!("the filter does not compile ({} error(s): undefined names?)", errs.len()))?;
        Ok(Self { filter })
    }

    /// Runs the filter on `doc`: `Ok(true)` when its first output is neither `false` nor `null`.
    pub fn matches(&self, doc: &serde_json::Value) -> Result<bool, String> {
        Ok(self.first(doc)?.is_some_and(|v| v.as_bool()))
    }

    /// Runs a mapping on `doc`: its first output, as JSON. No output is an error too. Errors never
    /// quote the record (jq's own messages would).
    pub fn map(&self, doc: &serde_json::Value) -> Result<serde_json::Value, String> {
        let out = self.first(doc)?.ok_or("the mapping gave no output for this record")?;
        serde_json::from_str(&out.to_string()).map_err(|_| "the mapping's output is not JSON".to_owned())
    }

    fn first(&self, doc: &serde_json::Value) -> Result<Option<Val>, String> {
        let bytes = serde_json::to_vec(doc).map_err(|e| e.to_string())?;
        let input = jaq_json::read::parse_single(&bytes).map_err(|_| "the record cannot be read by jq".to_owned())?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut out = self.filter.id.run((ctx, input)).map(unwrap_valr);
        match out.next() {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(_)) => Err("the jq program failed on this record".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn _is_shareable<T: Send + Sync>() {}
    #[allow(dead_code)]
    fn filters_are_shareable_across_threads() {
        _is_shareable::<JqProgram>();
    }

    #[test]
    fn selects_like_jq() {
        let f = JqProgram::compile(r#".kind == "marriage""#).unwrap();
        assert!(f.matches(&json!({"kind": "marriage"})).unwrap());
        assert!(!f.matches(&json!({"kind": "divorce"})).unwrap());
        let f = JqProgram::compile(r#"[.parties[] | select(.nationality != "CHN")] | length > 0"#).unwrap();
        assert!(f.matches(&json!({"parties": [{"nationality": "CHN"}, {"nationality": "PRT"}]})).unwrap());
        assert!(!f.matches(&json!({"parties": [{"nationality": "CHN"}]})).unwrap());
        assert!(!JqProgram::compile("empty").unwrap().matches(&json!({})).unwrap());
        assert!(!JqProgram::compile("null").unwrap().matches(&json!({})).unwrap());
        assert!(JqProgram::compile(".a + 1").unwrap().matches(&json!({"a": "x"})).is_err());
        assert!(JqProgram::compile(".kind ==").is_err());
        assert!(JqProgram::compile("no_such_function").is_err());
    }

    #[test]
    fn maps_between_shapes() {
        let m = JqProgram::compile(r#"{nsrsbh: .uscc, nsrmc: .name, djrq: .registered_on}"#).unwrap();
        let out =
            m.map(&json!({"uscc": "91440101MA59XXXX0X", "name": "某某公司", "registered_on": "2026-03-01"})).unwrap();
        assert_eq!(out, json!({"nsrsbh": "91440101MA59XXXX0X", "nsrmc": "某某公司", "djrq": "2026-03-01"}));
        let m = JqProgram::compile(r#"{n: (.n | tonumber)}"#).unwrap();
        assert_eq!(m.map(&json!({"n": "12"})).unwrap(), json!({"n": 12}));
        let err = m.map(&json!({"n": ["secret"]})).unwrap_err();
        assert!(!err.contains("secret"), "errors do not quote the record: {err}");
        assert!(JqProgram::compile("empty").unwrap().map(&json!({})).is_err());
    }
}
