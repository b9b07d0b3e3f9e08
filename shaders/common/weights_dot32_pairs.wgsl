// `w_dot32_pairs` for the formats whose reading does not define its own: `w_dot32` row by row.
// The contract: w_dot32_pairs(r, b, k, xs)[c] = w_dot32(r[c], b, k, xs) for four rows given
// as two pairs, r.y = r.x + 1 and r.w = r.z + 1 with r.x and r.z even, of a matrix stored in
// row tiles (weights_tiles.wgsl: a pair never straddles two tiles, and the rows that pad the
// last tile may be read). A format's own version loads what the rows of a pair share at once.

fn w_dot32_pairs(r: vec4<u32>, b: u32, k: u32, xs: X32) -> vec4<f32> {
    return vec4<f32>(
        w_dot32(r.x, b, k, xs),
        w_dot32(r.y, b, k, xs),
        w_dot32(r.z, b, k, xs),
        w_dot32(r.w, b, k, xs),
    );
}
