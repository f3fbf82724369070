//! Fuzz target: `flowtrain::fuzzing::idx` on arbitrary bytes (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowtrain::limits::set_memory_limit(Some(64 << 20));
    let _ = flowtrain::fuzzing::idx(data);
});
