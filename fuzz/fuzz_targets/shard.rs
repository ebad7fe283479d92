#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| selfsup_fuzz::shard_file(data));
