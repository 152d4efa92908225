//! A subscription `filter`: the first line is the jq program, the rest the record it judges.
//! Programs that can loop without end (recursion, `repeat`, `until`, `while`, `range`,
//! `limit`) are skipped: filters are written by the city's operators and checked at load on the
//! sample records; a step budget for them is noted in RELIABILITY.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (program, doc) = text.split_once('\n').unwrap_or((&text, "{}"));
    if program.len() > 200 || conghua_hub_fuzz::may_not_end(program) {
        return;
    }
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(doc) else { return };
    if let Ok(filter) = hub::routing::jq::JqProgram::compile(program) {
        let _ = filter.matches(&doc);
    }
});
