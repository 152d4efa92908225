//! Strict JSON for everything a department sends: a document with a member name twice is refused
//! with the member's pointer, because parsers disagree on which copy wins (serde keeps the last,
//! others the first), so the hub could validate one record while a department reads another.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body is not a strict JSON document.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (syntax, early end, a number out of range, nesting too deep).
    #[error("{what} (line {line}, column {column})")]
    Malformed {
        /// What is wrong, without any of the content.
        what: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// An object names the same member twice.
    #[error("the member at {pointer} appears twice in its object (line {line}, column {column})")]
    Duplicate {
        /// JSON pointer of the repeated member.
        pointer: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
}

const DUPLICATE: &str = "duplicate member:";

/// Parses one JSON document, refusing repeated member names.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut path = String::new();
    let value = Strict { path: &mut path }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    value.map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let text = e.to_string();
        match text.strip_prefix(DUPLICATE) {
            // serde_json appends " at line L column C" to custom messages; the pointer is before it.
            Some(rest) => {
                let pointer = rest.rsplit_once(" at line ").map_or(rest, |(p, _)| p).to_owned();
                JsonError::Duplicate { pointer, line, column }
            }
            None => {
                let what = match e.classify() {
                    serde_json::error::Category::Eof => "the body ends before the JSON value does",
                    serde_json::error::Category::Syntax => "the body is not valid JSON",
                    serde_json::error::Category::Data | serde_json::error::Category::Io => {
                        "the body cannot be read as JSON"
                    }
                };
                JsonError::Malformed { what, line, column }
            }
        }
    })
}

/// The lines of an NDJSON body: split on `\n`, without the empty tail after a final newline
/// (line numbers are positions in this list, from 1).
pub fn ndjson_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|last| last.iter().all(u8::is_ascii_whitespace)) {
        lines.pop();
    }
    lines
}

/// Builds a `Value` like serde_json's own visitor, keeping the pointer of the current member.
struct Strict<'p> {
    path: &'p mut String,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let len = self.path.len();
        loop {
            use fmt::Write as _;
            let _ = write!(self.path, "/{}", out.len());
            let item = seq.next_element_seed(Strict { path: &mut *self.path })?;
            self.path.truncate(len);
            match item {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let len = self.path.len();
        while let Some(key) = map.next_key::<String>()? {
            self.path.push('/');
            if key.contains(['~', '/']) {
                self.path.push_str(&super::escape(&key));
            } else {
                self.path.push_str(&key);
            }
            let value = map.next_value_seed(Strict { path: &mut *self.path })?;
            if out.contains_key(&key) {
                return Err(A::Error::custom(format_args!("{DUPLICATE}{}", self.path)));
            }
            self.path.truncate(len);
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_serde_json_on_ordinary_documents() {
        let text = br#"{"a":[1,-2,3.5,{"b":null,"c":true}],"d":"\u00e9x","e":{},"f":[],"g":18446744073709551615}"#;
        assert_eq!(parse(text).unwrap(), serde_json::from_slice::<Value>(text).unwrap());
    }

    #[test]
    fn a_repeated_member_is_named_by_pointer() {
        let e = parse(br#"{"person":{"name":"x","id":"1","name":"y"}}"#).unwrap_err();
        assert!(matches!(&e, JsonError::Duplicate { pointer, .. } if pointer == "/person/name"), "{e}");
        let e = parse(br#"[0,{"a/b":1,"a/b":2}]"#).unwrap_err();
        assert!(matches!(&e, JsonError::Duplicate { pointer, .. } if pointer == "/1/a~1b"), "{e}");
        // Equal names spelt with an escape are the same member.
        assert!(matches!(parse(br#"{"a":1,"\u0061":2}"#), Err(JsonError::Duplicate { .. })));
    }

    #[test]
    fn malformed_documents_say_where_without_content() {
        for (text, what) in [
            (&b"{\"a\":"[..], "ends"),
            (b"{\"a\" 1}", "not valid"),
            (b"1e400", "not valid"),
            (b"\xff", "not valid"),
            (b"{} {}", "not valid"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(matches!(e, JsonError::Malformed { .. }) && e.to_string().contains(what), "{e}");
        }
        let deep = "[".repeat(10_000);
        assert!(matches!(parse(deep.as_bytes()), Err(JsonError::Malformed { .. })));
    }
}
