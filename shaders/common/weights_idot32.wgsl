// `w_idot32` for the formats whose weights_*.wgsl does not define its own: their f32 values
// against the codes, through `w_load8`.
// The contract: w_idot32(row, b, k, xq) = sum over j < 32 of W[row, 32b + j] * c_j, with c_j
// the int8 code of entry j in xq (common/math.wgsl's XQ32; its scale xq.d is the caller's to
// apply), for a matrix with k columns. A format's own computes it with integer dot products
// of its codes (dot4I8Packed), its scales applied once per block or sub-block.

fn w_idot32(row: u32, b: u32, k: u32, xq: XQ32) -> f32 {
    var s = 0.0;
    for (var g = 0u; g < 4u; g++) {
        let w = w_load8(row, 4u * b + g, k);
        let c = select(xq.hi, xq.lo, g < 2u);
        s += dot(w.lo, i8x4(c[2u * (g % 2u)])) + dot(w.hi, i8x4(c[2u * (g % 2u) + 1u]));
    }
    return s;
}
