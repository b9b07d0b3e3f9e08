// The weight matrix's bindings of the kernels that read weights (matvec, matmul, embedding):
// its data as 16-byte words, and its scales (the format's, if any) as 4-byte ones. Its twin
// weights_data_wide.wgsl reads 32 and 16 bytes at a time.
@group(0) @binding(1) var<storage, read> w_data: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> w_scales: array<u32>;

// 4-byte word i of the scales.
fn scale_word(i: u32) -> u32 {
    return w_scales[i];
}
