// `w_dot16` for the formats whose weights_*.wgsl does not define its own: two `w_load8`.
// The contract: w_dot16(row, h, k, xs) = sum over j < 16 of W[row, 16h + j] * xs.v[j / 4][j % 4]
// for a matrix with k columns (every row a whole number of 32-weight blocks).

fn w_dot16(row: u32, h: u32, k: u32, xs: X16) -> f32 {
    let a = w_load8(row, 2u * h, k);
    let b = w_load8(row, 2u * h + 1u, k);
    return dot(a.lo, xs.v[0]) + dot(a.hi, xs.v[1]) + dot(b.lo, xs.v[2]) + dot(b.hi, xs.v[3]);
}
