// attention: Gemma 2 attention of n_q queries against the KV cache, split over the keys.
//
// For query t at absolute position pos = positions[t], head h, kv head g = h / (heads / kv_heads):
//   s_j = soft_cap(q . k_j * scale, softcap)       for visible keys j
//   out = sum_j softmax(s)_j v_j
// Key j is visible iff j <= pos and pos - j < window (window = 0xffffffff: no window); key j
// lives in cache slot j % capacity. Masked keys are skipped, so they get probability exactly 0,
// as transformers' additive mask after the soft-cap gives. scale is query_pre_attn_scalar^-0.5.
//
// Two phases (one algorithm): `partial`, grid (n_splits, heads / group_heads, n_q / (QPW *
// set_queries) rounded up), runs an online softmax over one split of the visible keys for QPW sets
// of columns, each set `group_heads` query heads of one kv head for `set_queries` consecutive
// queries (see `columns`; each key and value row is read once for them all, not once per query head
// and query) and writes (max, sum, acc[head_dim]) per query head to `partials`; `combine`, grid
// (heads, n_q), merges the splits (with one split, `partial` writes the output itself and `combine`
// is not dispatched). The visible keys of a query are cut into n_splits equal splits of at least WG
// * KPL keys, sized to its current position (not to the cache's capacity); with QPW = 2 there is
// one split. Decode is n_q = 1 with many splits; prefill is many queries with the same kernel.
// A decode step's `partial` may also do rope_store's work: common/attention_rope.wgsl's entry
// `partial_rope` (its own pipeline layout, two bindings more).
// head_dim <= 256, a multiple of 8 (a key's elements are loaded 8 at a time);
// group_heads <= 4 divides heads / kv_heads.
// Bindings: params; positions [n_q] u32; q [n_q, heads, head_dim] (rows q_stride apart);
// k_cache, v_cache (see kv_store.wgsl; written only by common/attention_rope.wgsl's entry); partials [n_q, heads, n_splits, head_dim + 2]; out [n_q, heads, head_dim];
// out_q [n_q * heads * head_dim / 32 * 24] words: with QUANT_OUT (QPW = 1, head_dim a multiple
// of 32) out quantized as quantize_q8.wgsl would write it, for an o_proj that reads its x so,
// by whichever phase writes out.
// Wrapper: src/kernels/attention.rs. CPU reference: reference::attention.

struct Params {
    n_q: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    capacity: u32,
    window: u32,
    group_heads: u32,
    set_queries: u32,
    n_splits: u32,
    scale: f32,
    softcap: f32,
    // Floats per query row of q: heads * head_dim, or with common/attention_rope.wgsl's
    // entry the whole q|k|v row of the products.
    q_stride: u32,
    // common/attention_rope.wgsl only: the RoPE table's positions, the q/k norms' eps and
    // weight offset.
    max_pos: u32,
    eps: f32,
    w_offset: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
// @binding(3) k_cache, @binding(4) v_cache and their loads `k_load8`, `v_load4`: see
// common/attention_cache.wgsl (16-byte words) and its twin attention_cache_wide.wgsl.
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> out_q: array<vec4<u32>>;

override WG: u32 = 64u;
override KV_F16: bool = true;
// Keys each invocation scores per step: 1 (neighbouring invocations on neighbouring keys, for
// GPUs), 2 or 4 (each invocation on a run of keys, for CPU adapters).
override KPL: u32 = 1u;

const MAX_HEAD_DIM: u32 = 256u;
// Query heads one workgroup serves at most (one vec4 of scores per key).
const MAX_GROUP_HEADS: u32 = 4u;
// Stands for -infinity in the running max: exp(NEG_BIG - m) is 0 and never NaN.
const NEG_BIG: f32 = -3.0e38;

// Queries one workgroup serves: 1, or (prefill without key splits, on CPU adapters) 2
// consecutive queries that share every key and value row the workgroup loads.
override QPW: u32 = 1u;
// CPU adapters with subgroups of at least 8 lanes, prefill (QPW = 2): a step's query elements
// and probabilities are loaded by the first 8 lanes and handed to the others (see spread_q and
// spread_probs).
override SPREAD_Q: bool = false;
// out also written quantized into out_q (see the bindings); out is written as without it.
override QUANT_OUT: bool = false;
// With common/attention_rope.wgsl's entry: q and k RMS-normed per head (Gemma 3's q_norm
// and k_norm) before their rotation.
override ROPE_NORM: bool = false;

// Set b's column i's query row at q_s[(b * columns() + i) * head_dim / 4 ..]. Each
// invocation keeps its columns' weighted values in registers (`Weighed`): elements 4 lid ..
// 4 lid + 3, head_dim / 4 <= WG.
var<workgroup> q_s: array<vec4<f32>, QPW * MAX_GROUP_HEADS * MAX_HEAD_DIM / 4u>;
// QUANT_OUT (QPW = 1): the columns' outputs, column i's at out_stage[i * head_dim / 4 ..],
// for the invocations that quantize whole blocks of 32.
var<workgroup> out_stage: array<vec4<f32>, MAX_GROUP_HEADS * MAX_HEAD_DIM / 4u>;
// Keys scored per step at most: WG * KPL <= 256 (src/kernels/attention.rs), which keeps the
// workgroup memory within 8 KiB per query (and out_stage and a reduction's slots).
const MAX_STEP: u32 = 256u;
// Each scored key's probability for set b's (up to four) columns at p_s[b * MAX_STEP ..].
var<workgroup> p_s: array<vec4<f32>, QPW * MAX_STEP>;

// A workgroup serves QPW sets of columns; a set's columns are `group_heads` query heads of
// `set_queries` consecutive queries (set_queries * group_heads <= 4): column c of set b is head
// c % group_heads (of the workgroup's) of query c / group_heads of the set. With
// set_queries = 1 a set is one query's heads; Gemma 2's pairs of heads per kv head leave room
// for two queries, which then share every key and value row loaded.
fn columns() -> u32 {
    return p.group_heads * p.set_queries;
}

// Column c of set b's query, unclamped (it may lie past the last query).
fn column_query(b: u32, c: u32, inv: Invocation) -> u32 {
    return (inv.wg.z * QPW + b) * p.set_queries + c / p.group_heads;
}

// Column c of set b's query, clamped to the last one, and its query head.
fn column_row(b: u32, c: u32, inv: Invocation) -> vec2<u32> {
    let t = min(column_query(b, c, inv), p.n_q - 1u);
    return vec2<u32>(t, inv.wg.y * p.group_heads + c % p.group_heads);
}

// Columns of `a` times their factors in `correction`.
fn rescaled(a: mat4x4<f32>, correction: vec4<f32>) -> mat4x4<f32> {
    let c = correction;
    return mat4x4<f32>(a[0] * c[0], a[1] * c[1], a[2] * c[2], a[3] * c[3]);
}

// Set b's (up to four) columns' query elements 4d .. 4d + 3, one column each, loaded by one
// invocation per subgroup and handed to the others (an index that is the same for every
// invocation is still a load per invocation on a CPU adapter); columns past the set's are 0.
fn q_heads(b: u32, d: u32, inv: Invocation) -> mat4x4<f32> {
    let nh = columns();
    let hd4 = p.head_dim / 4u;
    let at = b * nh * hd4 + d;
    var r = mat4x4<f32>();
    if one_lane(inv) {
        r[0] = q_s[at];
        if nh > 1u {
            r[1] = q_s[at + hd4];
        }
        if nh > 2u {
            r[2] = q_s[at + 2u * hd4];
            r[3] = q_s[at + 3u * hd4];
        }
    }
    return mat4x4<f32>(from_one_lane(r[0]), from_one_lane(r[1]), from_one_lane(r[2]), from_one_lane(r[3]));
}

// SPREAD_Q: lane l % 8 of each subgroup holds query elements 4d .. 4d + 7 of set l / 4's
// column l % 4 (a column past the set's holds another's and is not used), and `lanes4` hands
// a set's four to every lane: two loads per lane for the eight columns, where `q_heads` takes
// one per column and four elements.
fn spread_q(d: u32, inv: Invocation) -> mat2x4<f32> {
    let nh = columns();
    let l = lane_index(inv) % 8u;
    let col = min((l / 4u) * nh + min(l % 4u, nh - 1u), QPW * nh - 1u);
    let at = col * p.head_dim / 4u + d;
    return mat2x4<f32>(q_s[at], q_s[at + 1u]);
}

// Lanes first .. first + 3's v, as the columns of a matrix.
fn lanes4(v: vec4<f32>, first: u32) -> mat4x4<f32> {
    return mat4x4<f32>(from_lane(v, first), from_lane(v, first + 1u), from_lane(v, first + 2u), from_lane(v, first + 3u));
}

// A key's dot products with the (up to four) columns' queries (columns of qs).
fn head_dots(k4: vec4<f32>, qs: mat4x4<f32>) -> vec4<f32> {
    return k4 * qs;
}

// A key's scores for the columns (soft-capped and scaled), NEG_BIG where it is not visible
// (to the column's query, or the column is not served).
fn key_scores(dots: vec4<f32>, visible: vec4<bool>) -> vec4<f32> {
    var s = vec4<f32>(NEG_BIG);
    for (var i = 0u; i < columns(); i++) {
        s[i] = soft_cap(dots[i] * p.scale, p.softcap);
    }
    return select(vec4<f32>(NEG_BIG), s, visible);
}

// A key's unnormalised probabilities under the running max m: 0 where it is not visible.
fn key_probs(s: vec4<f32>, m: vec4<f32>, visible: vec4<bool>) -> vec4<f32> {
    return select(vec4<f32>(0.0), exp(s - m), visible);
}

// The keys query t sees in split `split` of its visible keys: [x, y) (empty where the split
// lies past them).
fn query_keys(t: u32, split: u32) -> vec2<u32> {
    let pos = positions[t];
    var first = 0u;
    if pos + 1u > p.window {
        first = pos + 1u - p.window;
    }
    let split_len = max(WG * KPL, (pos + 1u - first + p.n_splits - 1u) / p.n_splits);
    let lo = first + split * split_len;
    return vec2<u32>(lo, min(pos + 1u, lo + split_len));
}

// The keys each column of a set sees in a split: [lo[c], hi[c]).
struct Keys {
    lo: vec4<u32>,
    hi: vec4<u32>,
}

// Set b's columns' keys in split `split` (a served column's only).
fn set_keys(b: u32, split: u32, inv: Invocation) -> Keys {
    var k = Keys(vec4<u32>(0u), vec4<u32>(0u));
    for (var c = 0u; c < columns(); c++) {
        let r = query_keys(column_row(b, c, inv).x, split);
        k.lo[c] = r.x;
        k.hi[c] = r.y;
    }
    return k;
}

// Whether key j is visible to each column (false for columns not served).
fn visible(j: u32, keys: Keys) -> vec4<bool> {
    return (vec4<u32>(j) >= keys.lo) & (vec4<u32>(j) < keys.hi);
}

// One step of set b's online softmax over this invocation's KPL keys j0 .. (their dot
// products the columns of `dots`, visible where `keys` says): their probabilities go to
// p_s[b * MAX_STEP + at ..] for the value pass, the running max m and sum l are updated, and
// the factor that rescales the weighted values so far is returned.
fn softmax_step(
    b: u32,
    dots: mat4x4<f32>,
    j0_at: vec2<u32>,
    keys: Keys,
    ml: ptr<function, mat2x4<f32>>,
    inv: Invocation,
) -> vec4<f32> {
    let j0 = j0_at.x;
    let at = j0_at.y;
    let v0 = visible(j0, keys);
    let v1 = visible(j0 + 1u, keys) & vec4<bool>(KPL > 1u);
    let v2 = visible(j0 + 2u, keys) & vec4<bool>(KPL > 2u);
    let v3 = visible(j0 + 3u, keys) & vec4<bool>(KPL > 2u);
    let s0 = key_scores(dots[0], v0);
    let s1 = key_scores(dots[1], v1);
    let s2 = key_scores(dots[2], v2);
    let s3 = key_scores(dots[3], v3);
    let m = (*ml)[0];
    let m_new = max(m, wg_max4(max(max(s0, s1), max(s2, s3)), inv));
    let p0 = key_probs(s0, m_new, v0);
    let p1 = key_probs(s1, m_new, v1);
    let p2 = key_probs(s2, m_new, v2);
    let p3 = key_probs(s3, m_new, v3);
    let base = b * MAX_STEP + at;
    p_s[base] = p0;
    if KPL > 1u {
        p_s[base + 1u] = p1;
    }
    if KPL > 2u {
        p_s[base + 2u] = p2;
        p_s[base + 3u] = p3;
    }
    let correction = exp(m - m_new);
    (*ml)[0] = m_new;
    (*ml)[1] = (*ml)[1] * correction + wg_sum4(p0 + p1 + p2 + p3, inv);
    return correction;
}

@compute @workgroup_size(WG)
fn partial(inv: Invocation) {
    load_queries(inv);
    attend(inv);
}

// `partial` after its columns' queries are in q_s.
fn attend(inv: Invocation) {
    let split = inv.wg.x;
    // Set a, and with QPW = 2 set b after it (columns past the last query are computed for
    // the last query again and not stored); the keys are those any column sees.
    let keys_a = set_keys(0u, split, inv);
    var keys_b = keys_a;
    if QPW > 1u {
        keys_b = set_keys(1u, split, inv);
    }
    var lo = 0xffffffffu;
    var end = 0u;
    for (var c = 0u; c < columns(); c++) {
        lo = min(lo, min(keys_a.lo[c], keys_b.lo[c]));
        end = max(end, max(keys_a.hi[c], keys_b.hi[c]));
    }
    workgroupBarrier();
    // Each set's running max (column 0) and sum (column 1) per column.
    var ml_a = mat2x4<f32>(vec4<f32>(NEG_BIG), vec4<f32>(0.0));
    var ml_b = ml_a;
    var acc = Weighed(mat4x4<f32>(), mat4x4<f32>());
    let step = WG * KPL;
    for (var c = lo; c < end; c += step) {
        // This invocation's keys: KPL neighbours, so a CPU walks their rows in one run and
        // loads each query element once for them all. A key past `end` is scored from a row
        // that exists (its slot wraps) and then masked.
        let j0 = c + inv.lid * KPL;
        // Keys past `end` are masked anyway: a CPU adapter (KPL > 1) skips a subgroup whose
        // lanes all lie past it (a short context's step of WG * KPL keys is mostly such
        // lanes), which its first lane's keys tell (llvmpipe's subgroups are consecutive
        // invocations), so that the lanes that hand query elements to the others (see
        // spread_q) run with them. GPUs, whose subgroups need not be, score every slot.
        var dots = Dots(mat4x4<f32>(), mat4x4<f32>());
        if KPL == 1u || c + (inv.lid - lane_index(inv)) * KPL < end {
            dots = key_dots(j0, inv);
        }
        let at = inv.lid * KPL;
        var corrections = mat2x4<f32>(vec4<f32>(1.0), vec4<f32>(1.0));
        corrections[0] = softmax_step(0u, dots.a, vec2<u32>(j0, at), keys_a, &ml_a, inv);
        if QPW > 1u {
            corrections[1] = softmax_step(1u, dots.b, vec2<u32>(j0, at), keys_b, &ml_b, inv);
        }
        workgroupBarrier();
        acc = weigh_values(c, min(step, end - c), corrections, acc, inv);
        workgroupBarrier();
    }
    store_query(0u, split, ml_a, acc.a, inv);
    if QPW > 1u {
        store_query(1u, split, ml_b, acc.b, inv);
    }
    if QUANT_OUT && p.n_splits == 1u {
        store_quantized_out(inv);
    }
}

// The kv head the workgroup's query heads share, and where its elements start in a cache row.
fn kv_head_offset(inv: Invocation) -> u32 {
    let h0 = inv.wg.y * p.group_heads;
    return h0 / (p.heads / p.kv_heads) * p.head_dim;
}

// The sets' columns' query rows into q_s.
fn load_queries(inv: Invocation) {
    let nh = columns();
    let hd = p.head_dim;
    let hd4 = hd / 4u;
    for (var d = inv.lid; d < QPW * nh * hd4; d += WG) {
        let col = d / hd4;
        let row = column_row(col / nh, col % nh, inv);
        let e = row.x * p.q_stride + row.y * hd + 4u * (d % hd4);
        q_s[d] = vec4<f32>(q[e], q[e + 1u], q[e + 2u], q[e + 3u]);
    }
}

// Each set's dot products with this invocation's KPL keys j0 .. (column i: key j0 + i),
// eight elements of every key per step through one 16-byte load (a CPU adapter pays per load,
// not per byte).
struct Dots {
    a: mat4x4<f32>,
    b: mat4x4<f32>,
}

fn key_dots(j0: u32, inv: Invocation) -> Dots {
    let row = p.kv_heads * p.head_dim;
    let off = kv_head_offset(inv);
    let kb = vec4<u32>(
        (j0 % p.capacity) * row + off,
        ((j0 + 1u) % p.capacity) * row + off,
        ((j0 + 2u) % p.capacity) * row + off,
        ((j0 + 3u) % p.capacity) * row + off,
    );
    var r = Dots(mat4x4<f32>(), mat4x4<f32>());
    for (var d = 0u; d < p.head_dim / 4u; d += 2u) {
        var qa0: mat4x4<f32>;
        var qa1: mat4x4<f32>;
        var qb0 = mat4x4<f32>();
        var qb1 = mat4x4<f32>();
        if SPREAD_Q {
            let held = spread_q(d, inv);
            qa0 = lanes4(held[0], 0u);
            qa1 = lanes4(held[1], 0u);
            if QPW > 1u {
                qb0 = lanes4(held[0], 4u);
                qb1 = lanes4(held[1], 4u);
            }
        } else {
            qa0 = q_heads(0u, d, inv);
            qa1 = q_heads(0u, d + 1u, inv);
            if QPW > 1u {
                qb0 = q_heads(1u, d, inv);
                qb1 = q_heads(1u, d + 1u, inv);
            }
        }
        for (var i = 0u; i < KPL; i++) {
            let k8 = k_load8(kb[i] + 4u * d);
            r.a[i] += head_dots(k8[0], qa0) + head_dots(k8[1], qa1);
            if QPW > 1u {
                r.b[i] += head_dots(k8[0], qb0) + head_dots(k8[1], qb1);
            }
        }
    }
    return r;
}

// The nk keys from c, their probabilities in p_s, weighed into this invocation's values of
// each query (`acc`, rescaled first by its column of `corrections`). Each invocation weighs
// four neighbouring value elements of every key, so a key's probabilities are loaded once
// per invocation, and with subgroups once per subgroup (by one invocation, handed to the
// others): the loops stay uniform for that, an invocation past the head's last element
// computing and storing nothing. The key's cache slot is counted, not loaded.
fn weigh_values(
    c: u32,
    nk: u32,
    corrections: mat2x4<f32>,
    acc_in: Weighed,
    inv: Invocation,
) -> Weighed {
    let hd4 = p.head_dim / 4u;
    let row = p.kv_heads * p.head_dim;
    let off = kv_head_offset(inv);
    let d = min(inv.lid, hd4 - 1u);
    var acc = Weighed(rescaled(acc_in.a, corrections[0]), mat4x4<f32>());
    if QPW > 1u {
        acc.b = rescaled(acc_in.b, corrections[1]);
    }
    var slot = c % p.capacity;
    let at = off + 4u * d;
    // Four keys per iteration: llvmpipe stores the values a loop carries (here the 32
    // sums) under the execution mask once per iteration.
    var i = 0u;
    if SPREAD_Q {
        // Eight keys per iteration, their probabilities loaded by eight lanes (one key
        // each) and handed to the others.
        for (; i + 8u <= nk; i += 8u) {
            let held = spread_probs(i, inv);
            acc = weigh_probs(acc, lanes2(held, 0u), slot * row + at);
            slot = next_slot(slot);
            acc = weigh_probs(acc, lanes2(held, 1u), slot * row + at);
            slot = next_slot(slot);
            acc = weigh_probs(acc, lanes2(held, 2u), slot * row + at);
            slot = next_slot(slot);
            acc = weigh_probs(acc, lanes2(held, 3u), slot * row + at);
            slot = next_slot(slot);
            acc = weigh_probs(acc, lanes2(held, 4u), slot * row + at);
            slot = next_slot(slot);
            acc = weigh_probs(acc, lanes2(held, 5u), slot * row + at);
            slot = next_slot(slot);
            acc = weigh_probs(acc, lanes2(held, 6u), slot * row + at);
            slot = next_slot(slot);
            acc = weigh_probs(acc, lanes2(held, 7u), slot * row + at);
            slot = next_slot(slot);
        }
    }
    for (; i + 4u <= nk; i += 4u) {
        acc = weigh_key(acc, i, slot * row + at, inv);
        slot = next_slot(slot);
        acc = weigh_key(acc, i + 1u, slot * row + at, inv);
        slot = next_slot(slot);
        acc = weigh_key(acc, i + 2u, slot * row + at, inv);
        slot = next_slot(slot);
        acc = weigh_key(acc, i + 3u, slot * row + at, inv);
        slot = next_slot(slot);
    }
    for (; i < nk; i++) {
        acc = weigh_key(acc, i, slot * row + at, inv);
        slot = next_slot(slot);
    }
    return acc;
}

// This invocation's weighted values (its quad of elements) of set a and (QPW = 2) set b.
struct Weighed {
    a: mat4x4<f32>,
    b: mat4x4<f32>,
}

// Key i of the step (its value elements at e ..) weighed into acc with its probabilities.
fn weigh_key(acc: Weighed, i: u32, e: u32, inv: Invocation) -> Weighed {
    var pa = vec4<f32>(0.0);
    var pb = vec4<f32>(0.0);
    if one_lane(inv) {
        pa = p_s[i];
        if QPW > 1u {
            pb = p_s[MAX_STEP + i];
        }
    }
    return weigh_probs(acc, mat2x4<f32>(from_one_lane(pa), from_one_lane(pb)), e);
}

// A key's value elements at e .. weighed into acc with its probabilities for set a (column 0
// of probs) and set b (column 1).
fn weigh_probs(acc: Weighed, probs: mat2x4<f32>, e: u32) -> Weighed {
    let v4 = v_load4(e);
    var r = acc;
    r.a += outer(v4, probs[0]);
    if QPW > 1u {
        r.b += outer(v4, probs[1]);
    }
    return r;
}

// SPREAD_Q: lane l % 8 of each subgroup holds key i + l % 8's probabilities (set a's, set
// b's), `lanes2` hands a key's to every lane.
fn spread_probs(i: u32, inv: Invocation) -> mat2x4<f32> {
    let k = i + lane_index(inv) % 8u;
    var r = mat2x4<f32>(p_s[k], vec4<f32>(0.0));
    if QPW > 1u {
        r[1] = p_s[MAX_STEP + k];
    }
    return r;
}

fn lanes2(held: mat2x4<f32>, lane: u32) -> mat2x4<f32> {
    return mat2x4<f32>(from_lane(held[0], lane), from_lane(held[1], lane));
}

fn next_slot(slot: u32) -> u32 {
    return select(slot + 1u, 0u, slot + 1u == p.capacity);
}

// v weighted by each head's probability: column i is pr[i] * v.
fn outer(v: vec4<f32>, pr: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(pr.x * v, pr.y * v, pr.z * v, pr.w * v);
}

// Set b's columns' results for split `split` from this invocation's weighted values `a`
// (columns past the last query store nothing): with a single split the output itself (what
// `combine` would compute from it, exp(0) being 1, and no combine dispatch; with QUANT_OUT
// also into out_stage), else its split's (max, sum, weighted values) per query head.
fn store_query(b: u32, split: u32, ml: mat2x4<f32>, a: mat4x4<f32>, inv: Invocation) {
    let hd = p.head_dim;
    let hd4 = hd / 4u;
    let owns = inv.lid < hd4;
    let nh = columns();
    for (var i = 0u; i < nh; i++) {
        if column_query(b, i, inv) >= p.n_q {
            continue;
        }
        let row = column_row(b, i, inv);
        if p.n_splits == 1u {
            let v = a[i] / ml[1][i];
            if owns {
                let o = (row.x * p.heads + row.y) * hd + 4u * inv.lid;
                out[o] = v.x;
                out[o + 1u] = v.y;
                out[o + 2u] = v.z;
                out[o + 3u] = v.w;
                if QUANT_OUT {
                    out_stage[i * hd4 + inv.lid] = v;
                }
            }
            continue;
        }
        let pbase = ((row.x * p.heads + row.y) * p.n_splits + split) * (hd + 2u);
        if inv.lid == 0u {
            partials[pbase] = ml[0][i];
            partials[pbase + 1u] = ml[1][i];
        }
        if owns {
            let o = pbase + 2u + 4u * inv.lid;
            partials[o] = a[i].x;
            partials[o + 1u] = a[i].y;
            partials[o + 2u] = a[i].z;
            partials[o + 3u] = a[i].w;
        }
    }
}

// QUANT_OUT with a single split (QPW = 1): the columns' outputs in out_stage quantized into
// out_q, a block of 32 per invocation.
fn store_quantized_out(inv: Invocation) {
    let hd = p.head_dim;
    let nh = columns();
    workgroupBarrier();
    for (var i = 0u; i < nh; i++) {
        if column_query(0u, i, inv) >= p.n_q {
            continue;
        }
        let row = column_row(0u, i, inv);
        let obase = (row.x * p.heads + row.y) * hd;
        for (var blk = inv.lid; blk < hd / 32u; blk += WG) {
            var v: array<vec4<f32>, 8>;
            for (var g = 0u; g < 8u; g++) {
                v[g] = out_stage[i * hd / 4u + 8u * blk + g];
            }
            store_quantized(obase / 32u + blk, v);
        }
    }
}

@compute @workgroup_size(WG)
fn combine(inv: Invocation) {
    let h = inv.wg.x;
    let t = inv.wg.y;
    let hd = p.head_dim;
    let base = (t * p.heads + h) * p.n_splits * (hd + 2u);
    var m = NEG_BIG;
    for (var s = 0u; s < p.n_splits; s++) {
        m = max(m, partials[base + s * (hd + 2u)]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.n_splits; s++) {
        let b = base + s * (hd + 2u);
        l += exp(partials[b] - m) * partials[b + 1u];
    }
    for (var d = inv.lid; d < hd; d += WG) {
        var a = 0.0;
        for (var s = 0u; s < p.n_splits; s++) {
            let b = base + s * (hd + 2u);
            a += exp(partials[b] - m) * partials[b + 2u + d];
        }
        out[(t * p.heads + h) * hd + d] = a / l;
        if QUANT_OUT {
            out_s[d] = a / l;
        }
    }
    // QUANT_OUT: the head's values, a block of 32 per invocation.
    if QUANT_OUT {
        workgroupBarrier();
        for (var blk = inv.lid; blk < hd / 32u; blk += WG) {
            var v: array<vec4<f32>, 8>;
            for (var g = 0u; g < 8u; g++) {
                let e = 32u * blk + 4u * g;
                v[g] = vec4<f32>(out_s[e], out_s[e + 1u], out_s[e + 2u], out_s[e + 3u]);
            }
            store_quantized((t * p.heads + h) * hd / 32u + blk, v);
        }
    }
}

// QUANT_OUT, combine: the head's output values.
var<workgroup> out_s: array<f32, MAX_HEAD_DIM>;

// Block b of out (v[g] its entries 4g .. 4g + 3) into out_q, as quantize_q8.wgsl writes it.
fn store_quantized(b: u32, v: array<vec4<f32>, 8>) {
    let words = q8_pair_block(v);
    for (var j = 0u; j < 6u; j++) {
        out_q[6u * b + j] = words[j];
    }
}
