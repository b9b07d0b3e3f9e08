// weights_data.wgsl's binding as 32-byte words (SHADER_INT64), for the formats with a
// weights_<format>_wide.wgsl, on CPU adapters: llvmpipe turns each invocation's storage load
// into a bounds-checked scalar load per component, so a component of 8 bytes costs what one of
// 4 does. Gemma 3 270M on lavapipe (Mesa 25.0.7, 2 cores), against weights_data.wgsl: the
// decode Q8_0 products (lm_head included) 45-47 -> 35-36 ms per token, the prefill products
// of a 64-token step 415-425 -> 370-375 ms.
//
// The words are stored in row tiles (src/kernels/matrix.rs tiles them at upload): word j of
// row r sits at `word_at(r, j, words per row)`, the rows of each tile of TILE_ROWS side by
// side, word by word, and each word's scales (where the format has them) at the same index
// times their count per word. The CPU layouts' invocations each own 4 consecutive rows and 8
// lanes run side by side, so a SIMD pass reads one tile word by word: one contiguous stream
// where row-major rows made 32 short ones that the hardware prefetchers lose (270M lm_head,
// rows of 640 bytes: 31.6-34.8 -> 23.9-24.3 ms).
@group(0) @binding(1) var<storage, read> w_data: array<vec4<u64>>;

const TILE_ROWS: u32 = 32u;

// Where word j of row `row` sits, for `per_row` words per row.
fn word_at(row: u32, j: u32, per_row: u32) -> u32 {
    return ((row / TILE_ROWS) * per_row + j) * TILE_ROWS + row % TILE_ROWS;
}

// 8-byte word q of row `row` (8 int8 codes, 4 bf16 values, ...): one 8-byte load.
fn data8(row: u32, q: u32, per_row: u32) -> u64 {
    return w_data[word_at(row, q / 4u, per_row)][q % 4u];
}

fn low_word(v: u64) -> u32 {
    return u32(v & 0xfffffffflu);
}

fn high_word(v: u64) -> u32 {
    return u32(v >> 32u);
}
