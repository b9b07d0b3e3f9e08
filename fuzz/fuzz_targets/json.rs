//! config.json and model.safetensors.index.json texts.

#![no_main]

use gemma_wgpu::config::ModelConfig;
use gemma_wgpu::weights::safetensors::shard_names;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ModelConfig::from_json(text, "fuzz");
        let _ = shard_names(text, Path::new("fuzz"));
    }
});
