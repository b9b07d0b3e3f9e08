// `word_at` for matrices stored in row tiles, as CPU adapters store the formats they read
// wide and Q4_0 (src/kernels/matrix.rs tiles them at upload; weights_rows.wgsl is the
// row-major twin): word j of row r (a `w_data` element: 32 bytes wide, 16 narrow) sits at
// `word_at(r, j, words per row)`, the rows of each tile of TILE_ROWS side by side, word by
// word, and each word's scales (where the format has them) at the same index times their
// count per word. The CPU layouts' invocations each own 4 consecutive rows and 8 lanes run
// side by side, so a SIMD pass reads one tile word by word: one contiguous stream where
// row-major rows made 32 short ones that the hardware prefetchers lose (270M lm_head, rows of
// 640 bytes: 31.6-34.8 -> 23.9-25.5 ms on lavapipe).

const TILE_ROWS: u32 = 32u;

// Where word j of row `row` sits, for `per_row` words per row.
fn word_at(row: u32, j: u32, per_row: u32) -> u32 {
    return ((row / TILE_ROWS) * per_row + j) * TILE_ROWS + row % TILE_ROWS;
}
