// Workgroup reductions through workgroup memory: the path for devices without SUBGROUP.
// Twin of reduce_subgroup.wgsl (same functions, same meaning). WG must be a power of two
// no larger than 256 (checked by the Rust wrappers). Call in uniform control flow.

struct Invocation {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

const REDUCE_SLOTS: u32 = 256u;
var<workgroup> reduce_f32: array<vec4<f32>, REDUCE_SLOTS>;
var<workgroup> reduce_u32: array<u32, REDUCE_SLOTS>;

fn wg_sum4(x: vec4<f32>, inv: Invocation) -> vec4<f32> {
    workgroupBarrier();
    reduce_f32[inv.lid] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if inv.lid < stride {
            reduce_f32[inv.lid] += reduce_f32[inv.lid + stride];
        }
        workgroupBarrier();
    }
    return reduce_f32[0];
}

fn wg_sum(x: f32, inv: Invocation) -> f32 {
    return wg_sum4(vec4<f32>(x, 0.0, 0.0, 0.0), inv).x;
}

fn wg_max4(x: vec4<f32>, inv: Invocation) -> vec4<f32> {
    workgroupBarrier();
    reduce_f32[inv.lid] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if inv.lid < stride {
            reduce_f32[inv.lid] = max(reduce_f32[inv.lid], reduce_f32[inv.lid + stride]);
        }
        workgroupBarrier();
    }
    return reduce_f32[0];
}


fn wg_argmax(value: f32, index: u32, inv: Invocation) -> ArgMax {
    workgroupBarrier();
    reduce_f32[inv.lid].x = value;
    reduce_u32[inv.lid] = index;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if inv.lid < stride {
            let a = argmax_merge(
                ArgMax(reduce_f32[inv.lid].x, reduce_u32[inv.lid]),
                ArgMax(reduce_f32[inv.lid + stride].x, reduce_u32[inv.lid + stride]),
            );
            reduce_f32[inv.lid].x = a.value;
            reduce_u32[inv.lid] = a.index;
        }
        workgroupBarrier();
    }
    return ArgMax(reduce_f32[0].x, reduce_u32[0]);
}

// Twin of reduce_subgroup.wgsl's: without subgroups every invocation loads shared values.
fn one_lane(inv: Invocation) -> bool {
    return true;
}

fn from_one_lane(v: vec4<f32>) -> vec4<f32> {
    return v;
}

// Twins of reduce_subgroup.wgsl's for subgroups of one invocation: its lane is 0 and the only
// lane it can read is its own (kernels hand values between lanes only where the device has
// subgroups large enough: matmul's SPREAD_X).
fn lane_index(inv: Invocation) -> u32 {
    return 0u;
}

fn from_lane(v: vec4<f32>, lane: u32) -> vec4<f32> {
    return v;
}
