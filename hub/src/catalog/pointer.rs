//! JSON pointers with a `*` step over arrays: how record types name their key and subjects and how
//! grants name the fields a reader receives. Projection here is what makes data minimisation a
//! property of the code rather than of the readers' good manners.

use std::fmt;

use serde_json::{Map, Value};

/// One step of a pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An object member or an array index.
    Key(String),
    /// Every element of an array (or every member of an object).
    Any,
}

/// A parsed pointer such as `/parties/*/id_number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPointer {
    text: String,
    steps: Vec<Step>,
}

/// Why a pointer could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// Every pointer names a field below the root.
    #[error("{0:?} is not a JSON pointer (it must start with /)")]
    NoSlash(String),
    /// `~` must be followed by 0 or 1 (RFC 6901).
    #[error("{0:?} has a bad ~ escape")]
    BadEscape(String),
    /// `//` or a trailing `/`.
    #[error("{0:?} has an empty step")]
    EmptyStep(String),
}

impl FieldPointer {
    /// Parses RFC 6901 syntax, reading a whole `*` step as "every element".
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        let rest = text.strip_prefix('/').ok_or_else(|| PointerError::NoSlash(text.to_owned()))?;
        let mut steps = Vec::new();
        for raw in rest.split('/') {
            if raw.is_empty() {
                return Err(PointerError::EmptyStep(text.to_owned()));
            }
            if raw == "*" {
                steps.push(Step::Any);
                continue;
            }
            let mut out = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(PointerError::BadEscape(text.to_owned())),
                    }
                } else {
                    out.push(c);
                }
            }
            steps.push(Step::Key(out));
        }
        Ok(Self { text: text.to_owned(), steps })
    }

    /// The pointer to the whole document (`""`), which [`FieldPointer::parse`] never gives: no
    /// grant or key can name it, only the hub's own documents use it.
    pub fn root() -> Self {
        Self { text: String::new(), steps: Vec::new() }
    }

    /// The steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when a step is `*`.
    pub fn has_wildcard(&self) -> bool {
        self.steps.contains(&Step::Any)
    }

    /// Every value the pointer reaches in `doc` (several when it has `*`).
    pub fn values<'a>(&self, doc: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![doc];
        for step in &self.steps {
            let mut next = Vec::new();
            for v in current {
                match (step, v) {
                    (Step::Key(k), Value::Object(m)) => next.extend(m.get(k)),
                    (Step::Key(k), Value::Array(a)) => {
                        next.extend(k.parse::<usize>().ok().and_then(|i| a.get(i)));
                    }
                    (Step::Any, Value::Array(a)) => next.extend(a.iter()),
                    (Step::Any, Value::Object(m)) => next.extend(m.values()),
                    _ => {}
                }
            }
            current = next;
        }
        current
    }

    /// True when a JSON Schema admits a value at this pointer, following local `$ref`s and
    /// `allOf`/`anyOf`/`oneOf` branches. Used to reject grants that name fields that cannot exist.
    pub fn exists_in_schema(&self, schema: &Value) -> bool {
        schema_walk(schema, schema, &self.steps, 0)
    }
}

impl fmt::Display for FieldPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn schema_walk(root: &Value, node: &Value, steps: &[Step], depth: usize) -> bool {
    if depth > 64 {
        return false;
    }
    if let Some(target) = node.get("$ref").and_then(Value::as_str) {
        let resolved = target.strip_prefix('#').and_then(|p| root.pointer(p));
        if let Some(resolved) = resolved {
            if schema_walk(root, resolved, steps, depth + 1) {
                return true;
            }
        }
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = node.get(combinator).and_then(Value::as_array) {
            if branches.iter().any(|b| schema_walk(root, b, steps, depth + 1)) {
                return true;
            }
        }
    }
    let Some((first, rest)) = steps.split_first() else {
        return true;
    };
    let child = |name: &str| node.get(name).filter(|v| v.is_object());
    match first {
        Step::Key(k) => {
            if let Some(p) = node.get("properties").and_then(|p| p.get(k)) {
                if schema_walk(root, p, rest, depth + 1) {
                    return true;
                }
            }
            if k.parse::<usize>().is_ok() {
                if let Some(items) = child("items") {
                    return schema_walk(root, items, rest, depth + 1);
                }
            }
            child("additionalProperties").is_some_and(|a| schema_walk(root, a, rest, depth + 1))
        }
        Step::Any => child("items").is_some_and(|items| schema_walk(root, items, rest, depth + 1)),
    }
}

/// Keeps only the parts of `doc` that the pointers reach; array positions are kept so that the
/// nth party of a marriage stays the nth party. A pointer that reaches nothing adds nothing.
pub fn project(doc: &Value, fields: &[FieldPointer]) -> Value {
    let paths: Vec<&[Step]> = fields.iter().map(|f| f.steps()).collect();
    project_node(doc, &paths).unwrap_or_else(|| Value::Object(Map::new()))
}

fn project_node(v: &Value, paths: &[&[Step]]) -> Option<Value> {
    if paths.iter().any(|p| p.is_empty()) {
        return Some(v.clone());
    }
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, child) in m {
                let rests: Vec<&[Step]> = paths
                    .iter()
                    .filter(|p| matches!(&p[0], Step::Key(s) if s == k) || p[0] == Step::Any)
                    .map(|p| &p[1..])
                    .collect();
                if rests.is_empty() {
                    continue;
                }
                if let Some(projected) = project_node(child, &rests) {
                    out.insert(k.clone(), projected);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            let mut any = false;
            for (i, child) in a.iter().enumerate() {
                let index = i.to_string();
                let rests: Vec<&[Step]> = paths
                    .iter()
                    .filter(|p| p[0] == Step::Any || matches!(&p[0], Step::Key(s) if *s == index))
                    .map(|p| &p[1..])
                    .collect();
                let projected = if rests.is_empty() { None } else { project_node(child, &rests) };
                any |= projected.is_some();
                out.push(projected.unwrap_or(Value::Null));
            }
            any.then_some(Value::Array(out))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ptrs(list: &[&str]) -> Vec<FieldPointer> {
        list.iter().map(|p| FieldPointer::parse(p).unwrap()).collect()
    }

    #[test]
    fn parse_and_escape() {
        let p = FieldPointer::parse("/a~1b/*/c~0d").unwrap();
        assert_eq!(p.steps(), &[Step::Key("a/b".into()), Step::Any, Step::Key("c~d".into())]);
        assert!(FieldPointer::parse("a").is_err());
        assert!(FieldPointer::parse("/a//b").is_err());
        assert!(FieldPointer::parse("/a~2").is_err());
    }

    #[test]
    fn values_walk_arrays() {
        let doc = json!({"parties": [{"id": "1"}, {"id": "2"}, {"x": 1}]});
        let got: Vec<_> = FieldPointer::parse("/parties/*/id").unwrap().values(&doc).into_iter().cloned().collect();
        assert_eq!(got, vec![json!("1"), json!("2")]);
        assert_eq!(FieldPointer::parse("/parties/1/id").unwrap().values(&doc), vec![&json!("2")]);
    }

    #[test]
    fn projection_keeps_only_granted_fields_and_positions() {
        let doc = json!({"no": "J1", "office": "x", "parties": [
            {"id": "1", "name": "a", "addr": "p"}, {"id": "2", "name": "b", "addr": "q"}]});
        let out = project(&doc, &ptrs(&["/no", "/parties/*/id"]));
        assert_eq!(out, json!({"no": "J1", "parties": [{"id": "1"}, {"id": "2"}]}));
        let out = project(&doc, &ptrs(&["/parties/1/name"]));
        assert_eq!(out, json!({"parties": [null, {"name": "b"}]}));
        let out = project(&doc, &ptrs(&["/parties"]));
        assert_eq!(out["parties"], doc["parties"]);
        assert_eq!(project(&doc, &ptrs(&["/absent"])), json!({}));
    }

    #[test]
    fn schema_existence_follows_items_refs_and_combinators() {
        let schema = json!({"type": "object", "$defs": {"p": {"type": "object", "properties": {"id": {}}}},
            "properties": {"parties": {"type": "array", "items": {"$ref": "#/$defs/p"}},
                           "t": {"anyOf": [{"type": "object", "properties": {"u": {}}}, {"type": "string"}]}}});
        assert!(FieldPointer::parse("/parties/*/id").unwrap().exists_in_schema(&schema));
        assert!(FieldPointer::parse("/parties/0/id").unwrap().exists_in_schema(&schema));
        assert!(FieldPointer::parse("/t/u").unwrap().exists_in_schema(&schema));
        assert!(!FieldPointer::parse("/parties/*/name").unwrap().exists_in_schema(&schema));
        assert!(!FieldPointer::parse("/nothing").unwrap().exists_in_schema(&schema));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Projection never invents data: every value it keeps sits at the same place in the source.
        #[test]
        fn projection_is_a_sub_document(doc in arb_json(), picks in prop::collection::vec("(/(\\*|[a-c]|[0-2])){1,3}", 0..4)) {
            let fields: Vec<FieldPointer> = picks.iter().map(|p| FieldPointer::parse(p).unwrap()).collect();
            let out = project(&doc, &fields);
            fn sub(out: &Value, src: &Value) -> bool {
                match (out, src) {
                    (Value::Object(o), Value::Object(s)) => o.iter().all(|(k, v)| s.get(k).is_some_and(|sv| sub(v, sv))),
                    (Value::Array(o), Value::Array(s)) => o.len() == s.len() && o.iter().zip(s).all(|(v, sv)| v.is_null() || sub(v, sv)),
                    (Value::Object(o), _) => o.is_empty(),
                    (a, b) => a == b,
                }
            }
            prop_assert!(sub(&out, &doc), "{out} is not inside {doc}");
            // Granting every top-level member of an object gives the object back unchanged.
            if let Value::Object(m) = &doc {
                let all: Vec<FieldPointer> = m.keys().filter_map(|k| FieldPointer::parse(&format!("/{}", k)).ok()).collect();
                prop_assert_eq!(&project(&doc, &all), &doc);
            }
        }
    }
}
