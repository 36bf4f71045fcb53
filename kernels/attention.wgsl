// Causal grouped-query attention of n_tokens new queries over the KV cache kept in GPU memory
// (f32, [sequence][n_ctx][kv_dim]; the new tokens' keys and values are already in it). Token t
// is at position rows[2t + 1] of sequence rows[2t] and attends over that sequence's positions
// 0..=its own, so one batch may mix sequences. One workgroup per (head, token); keys are visited in chunks of CH positions with an online softmax, so any
// context length fits in workgroup memory. Each thread owns output dimensions lid + 64k.
struct Shape {
    n_head: u32,
    // Query heads per KV head.
    group: u32,
    head_dim_k: u32,
    head_dim_v: u32,
    kv_dim_k: u32,
    kv_dim_v: u32,
    scale: f32,
    // Positions per sequence slot of the cache.
    n_ctx: u32,
}
@group(0) @binding(0) var<uniform> shape: Shape;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
// Per token: its sequence and its position.
@group(0) @binding(6) var<storage, read> rows: array<u32>;

const WG: u32 = 64u;
const CH: u32 = 256u;
// Head dimensions up to 64 * DIMS_PER_THREAD.
const DIMS_PER_THREAD: u32 = 4u;
var<workgroup> sc: array<f32, CH>;
var<workgroup> red: array<f32, WG>;

fn reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if lid < k {
            if is_max {
                red[lid] = max(red[lid], red[lid + k]);
            } else {
                red[lid] += red[lid + k];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t = wg.y;
    let g = h / shape.group;
    let seen = rows[2u * t + 1u] + 1u;
    // The first cache row of the token's sequence.
    let slot = rows[2u * t] * shape.n_ctx;
    let qo = (t * shape.n_head + h) * shape.head_dim_k;
    let ko = slot * shape.kv_dim_k + g * shape.head_dim_k;
    let vo = slot * shape.kv_dim_v + g * shape.head_dim_v;
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var base = 0u; base < seen; base += CH) {
        let cnt = min(CH, seen - base);
        var cmax = -3.0e38;
        for (var j = lid; j < cnt; j += WG) {
            let kr = (base + j) * shape.kv_dim_k + ko;
            var s = 0.0;
            for (var d = 0u; d < shape.head_dim_k; d++) {
                s += q[qo + d] * k_cache[kr + d];
            }
            s *= shape.scale;
            sc[j] = s;
            cmax = max(cmax, s);
        }
        let m_new = max(m, reduce(lid, cmax, true));
        let corr = exp(m - m_new);
        var csum = 0.0;
        for (var j = lid; j < cnt; j += WG) {
            let e = exp(sc[j] - m_new);
            sc[j] = e;
            csum += e;
        }
        // The reduction's barriers also publish the exponentials in sc.
        l = l * corr + reduce(lid, csum, false);
        for (var k = 0u; k < DIMS_PER_THREAD; k++) {
            let d = lid + k * WG;
            if d < shape.head_dim_v {
                var a = acc[k] * corr;
                for (var j = 0u; j < cnt; j++) {
                    a += sc[j] * v_cache[(base + j) * shape.kv_dim_v + vo + d];
                }
                acc[k] = a;
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    let oo = (t * shape.n_head + h) * shape.head_dim_v;
    for (var k = 0u; k < DIMS_PER_THREAD; k++) {
        let d = lid + k * WG;
        if d < shape.head_dim_v {
            out[oo + d] = acc[k] / l;
        }
    }
}
