// Rotary embedding in place over every head of every token, from per-token (cos, sin) tables
// computed on the CPU the way ggml does (rope_freqs and linear scaling included). Pairs are
// adjacent (normal, style 0) or half a rotation apart (neox, style 1).
struct Shape {
    head_dim: u32,
    n_heads: u32,
    // rope_dims / 2: rotated pairs per head.
    half: u32,
    style: u32,
}
@group(0) @binding(0) var<uniform> shape: Shape;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    let per_token = shape.n_heads * shape.half;
    let t = id / per_token;
    if t >= step.n_tokens {
        return;
    }
    let head = (id % per_token) / shape.half;
    let i = id % shape.half;
    let cs = table[t * shape.half + i];
    let base = (t * shape.n_heads + head) * shape.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if shape.style == 1u {
        a = base + i;
        b = a + shape.half;
    }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[b] = x0 * cs.y + x1 * cs.x;
}
