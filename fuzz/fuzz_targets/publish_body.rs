//! The body of `POST /v1/records/{type}`, for a type with nesting, arrays and subjects.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| conghua_hub_fuzz::publish_body("marriage-registration", data));
