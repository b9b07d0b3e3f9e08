//! A safetensors file's header, the file being the input.

#![no_main]

use gemma_wgpu::weights::safetensors::parse_header;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = parse_header(Path::new("fuzz"), data, data.len() as u64);
});
