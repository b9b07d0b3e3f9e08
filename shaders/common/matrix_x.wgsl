// Shared by the matrix products (matvec.wgsl, matmul.wgsl), whose `x` binding holds the
// activations as vec4s.

// x[i] where i is the same for every invocation of a subgroup: with subgroups loaded by lane
// 0 alone and handed to the others (on CPU adapters every invocation's load is a scalar load
// of its own); without them, each invocation loads it. Call in uniform control flow.
fn x_shared(i: u32, inv: Invocation) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if one_lane(inv) {
        v = x[i];
    }
    return from_one_lane(v);
}
