//! A field mapping (jq, first line) and a grant's field list (second line, comma-separated
//! pointers) applied to a record (the rest): projection first, then the mapping, as delivery does.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (program, fields, doc) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or("{}"));
    if program.len() > 200 || conghua_hub_fuzz::may_not_end(program) {
        return;
    }
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(doc) else { return };
    let pointers: Vec<_> =
        fields.split(',').filter_map(|f| hub::catalog::pointer::FieldPointer::parse(f.trim()).ok()).collect();
    let projected = hub::catalog::pointer::project(&doc, &pointers);
    if let Ok(mapping) = hub::routing::jq::JqProgram::compile(program) {
        if let Ok(out) = mapping.map(&projected) {
            serde_json::to_string(&out).expect("a mapped value that does not serialise");
        }
    }
});
