//! A whole GGUF file as the host loads it: parse, tokenizer, config, tensor table, and every
//! tensor converted to its GPU layout (no GPU needed).

#![no_main]

use gemma_wgpu::config::ModelConfig;
use gemma_wgpu::engine::Tokenizer;
use gemma_wgpu::weights::gemma;
use gemma_wgpu::weights::gguf::Gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else {
        return;
    };
    let _ = Tokenizer::from_gguf(&g);
    let Ok(c) = ModelConfig::from_gguf(&g) else {
        return;
    };
    if gemma::check_gguf(&g, &c).is_err() {
        return;
    }
    let _ = gemma::each_tensor(&c, |name, shape| {
        if shape[1] == 1 {
            gemma::gguf_norm(&g, name, shape[0], c.arch).map(drop)
        } else {
            gemma::gguf_matrix(&g, name, shape, c.arch).map(|m| drop(m.to_i8_affine()))
        }
    });
});
