#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| selfsup_fuzz::idx_file(data));
