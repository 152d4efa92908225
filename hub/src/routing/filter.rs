//! Subscription filters in the jq language (jaq), compiled once when the config loads and run on
//! each new record version: a record is routed when the filter's first output is truthy.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, ValT, Vars};
use jaq_json::Val;

type Data = data::JustLut<Val>;

/// A compiled jq filter.
pub struct JqFilter {
    filter: jaq_core::compile::Filter<jaq_core::Native<Data>>,
}

impl std::fmt::Debug for JqFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JqFilter")
    }
}

impl JqFilter {
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
        let bytes = serde_json::to_vec(doc).map_err(|e| e.to_string())?;
        let input = jaq_json::read::parse_single(&bytes).map_err(|_| "the record cannot be read by jq".to_owned())?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut out = self.filter.id.run((ctx, input)).map(unwrap_valr);
        match out.next() {
            None => Ok(false),
            Some(Ok(v)) => Ok(v.as_bool()),
            Some(Err(_)) => Err("the filter failed on this record".to_owned()),
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
        _is_shareable::<JqFilter>();
    }

    #[test]
    fn selects_like_jq() {
        let f = JqFilter::compile(r#".kind == "marriage""#).unwrap();
        assert!(f.matches(&json!({"kind": "marriage"})).unwrap());
        assert!(!f.matches(&json!({"kind": "divorce"})).unwrap());
        let f = JqFilter::compile(r#"[.parties[] | select(.nationality != "CHN")] | length > 0"#).unwrap();
        assert!(f.matches(&json!({"parties": [{"nationality": "CHN"}, {"nationality": "PRT"}]})).unwrap());
        assert!(!f.matches(&json!({"parties": [{"nationality": "CHN"}]})).unwrap());
        assert!(!JqFilter::compile("empty").unwrap().matches(&json!({})).unwrap());
        assert!(!JqFilter::compile("null").unwrap().matches(&json!({})).unwrap());
        assert!(JqFilter::compile(".a + 1").unwrap().matches(&json!({"a": "x"})).is_err());
        assert!(JqFilter::compile(".kind ==").is_err());
        assert!(JqFilter::compile("no_such_function").is_err());
    }
}
