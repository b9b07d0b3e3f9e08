// Workgroup reductions built on subgroup operations; used when the device has SUBGROUP.
// Twin of reduce_workgroup.wgsl: both define `Invocation`, `wg_sum`, `wg_sum4`, `wg_max4`
// (componentwise) and `wg_argmax` with the same meaning, and the lane helpers `one_lane`,
// `from_one_lane`, `lane_index` and `from_lane`, so a kernel body works with either
// (src/kernels/source.rs picks one). Every function must be called in uniform control
// flow by the whole workgroup.
// There is no `enable subgroups;` line: naga takes the subgroup builtins without it and rejects
// the directive; wgpu checks the SUBGROUP feature when the pipeline is built.

struct Invocation {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) n_sg: u32,
}

// A workgroup holds at most 256 invocations and a subgroup at least 4.
const REDUCE_SLOTS: u32 = 64u;
var<workgroup> reduce_f32: array<vec4<f32>, REDUCE_SLOTS>;
var<workgroup> reduce_u32: array<u32, REDUCE_SLOTS>;

fn wg_sum4(x: vec4<f32>, inv: Invocation) -> vec4<f32> {
    let s = subgroupAdd(x);
    workgroupBarrier();
    if inv.sg_lane == 0u {
        reduce_f32[inv.sg_id] = s;
    }
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    for (var i = 0u; i < inv.n_sg; i++) {
        total += reduce_f32[i];
    }
    return total;
}

fn wg_sum(x: f32, inv: Invocation) -> f32 {
    return wg_sum4(vec4<f32>(x, 0.0, 0.0, 0.0), inv).x;
}

fn wg_max4(x: vec4<f32>, inv: Invocation) -> vec4<f32> {
    let s = subgroupMax(x);
    workgroupBarrier();
    if inv.sg_lane == 0u {
        reduce_f32[inv.sg_id] = s;
    }
    workgroupBarrier();
    var best = reduce_f32[0];
    for (var i = 1u; i < inv.n_sg; i++) {
        best = max(best, reduce_f32[i]);
    }
    return best;
}


// The largest value and its index; among equal values the smallest index wins.
fn wg_argmax(value: f32, index: u32, inv: Invocation) -> ArgMax {
    let m = subgroupMax(value);
    let i = subgroupMin(select(0xffffffffu, index, value == m));
    workgroupBarrier();
    if inv.sg_lane == 0u {
        reduce_f32[inv.sg_id].x = m;
        reduce_u32[inv.sg_id] = i;
    }
    workgroupBarrier();
    var best = ArgMax(reduce_f32[0].x, reduce_u32[0]);
    for (var s = 1u; s < inv.n_sg; s++) {
        best = argmax_merge(best, ArgMax(reduce_f32[s].x, reduce_u32[s]));
    }
    return best;
}

// Whether this invocation is the one that loads a value the whole subgroup shares
// (`from_one_lane` then hands it to the others); with the workgroup twin every invocation
// loads it itself.
fn one_lane(inv: Invocation) -> bool {
    return inv.sg_lane == 0u;
}

fn from_one_lane(v: vec4<f32>) -> vec4<f32> {
    return subgroupBroadcast(v, 0u);
}

// This invocation's lane in its subgroup.
fn lane_index(inv: Invocation) -> u32 {
    return inv.sg_lane;
}

// Lane `lane`'s v (lane < the subgroup's size).
fn from_lane(v: vec4<f32>, lane: u32) -> vec4<f32> {
    return subgroupShuffle(v, lane);
}
