//! Fuzz target: `flowtrain::fuzzing::config` on arbitrary bytes (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flowtrain::limits::set_memory_limit(Some(64 << 20));
    let _ = flowtrain::fuzzing::config(data);
});
