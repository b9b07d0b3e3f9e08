// `w_dot32` for the formats whose weights_*.wgsl does not define its own: two `w_dot16`.
// The contract: w_dot32(row, b, k, xs) = sum over j < 32 of W[row, 32b + j] * x[j], with
// x[j] = xs.lo.v[j / 4][j % 4] for j < 16 and xs.hi.v[(j - 16) / 4][j % 4] after, for a matrix
// with k columns (every row a whole number of 32-weight blocks).

fn w_dot32(row: u32, b: u32, k: u32, xs: X32) -> f32 {
    return w_dot16(row, 2u * b, k, xs.lo) + w_dot16(row, 2u * b + 1u, k, xs.hi);
}
