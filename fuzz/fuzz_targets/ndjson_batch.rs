//! The body of `POST /v1/batch/{type}`: framing into lines, then each line as a record.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let lines = hub::catalog::strict::ndjson_lines(data);
    let newlines = data.iter().filter(|b| **b == b'\n').count();
    assert!(lines.len() <= newlines + 1);
    for line in lines {
        assert!(!line.contains(&b'\n'));
        conghua_hub_fuzz::publish_body("household-registration", line);
    }
});
