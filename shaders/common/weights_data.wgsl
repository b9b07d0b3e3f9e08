// The weight matrix's data binding of the kernels that read weights (matvec, matmul,
// embedding), as 16-byte words. Its twin weights_data_wide.wgsl reads 32 bytes at a time.
@group(0) @binding(1) var<storage, read> w_data: array<vec4<u32>>;
