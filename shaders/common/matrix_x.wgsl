// Shared by the matrix products (matvec.wgsl, matmul.wgsl): their `x` binding, [n, k] f32
// activations as vec4s, read 8 entries at a time. Its twin matrix_x_wide.wgsl reads them
// through 8-byte words.
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;

// Entries 8i .. 8i + 8 of x.
fn x_load8(i: u32) -> X8 {
    return X8(x[2u * i], x[2u * i + 1u]);
}

// x_load8(i) where i is the same for every invocation of a subgroup: with subgroups loaded by
// lane 0 alone and handed to the others (on CPU adapters every invocation's load is a scalar
// load of its own); without them, each invocation loads it. Call in uniform control flow.
fn x_shared8(i: u32, inv: Invocation) -> X8 {
    var v = X8(vec4<f32>(0.0), vec4<f32>(0.0));
    if one_lane(inv) {
        v = x_load8(i);
    }
    return X8(from_one_lane(v.lo), from_one_lane(v.hi));
}
