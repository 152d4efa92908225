//! `hub config check` on arbitrary text: every outcome is a config or a located error.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Err(e) = hub::config::Config::parse(std::path::Path::new("fuzz.toml"), text) {
        let shown = e.to_string();
        assert!(!shown.is_empty());
    }
});
