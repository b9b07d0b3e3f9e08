// `word_at` for matrices stored row after row (the twin of weights_tiles.wgsl): word j of row
// `row` (a `w_data` element), for `per_row` words per row.
fn word_at(row: u32, j: u32, per_row: u32) -> u32 {
    return row * per_row + j;
}
