// out = x / sqrt(mean(x²) + eps) * weight, one workgroup per token (the sum of squares is a
// workgroup reduction; ggml sums in f64 on the CPU, f32 partial sums here).
struct Shape {
    dim: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}
@group(0) @binding(0) var<uniform> shape: Shape;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = wg.x * shape.dim;
    var s = 0.0;
    for (var i = lid; i < shape.dim; i += WG) {
        let v = x[base + i];
        s += v * v;
    }
    red[lid] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if lid < k {
            red[lid] += red[lid + k];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(red[0] / f32(shape.dim) + shape.eps);
    for (var i = lid; i < shape.dim; i += WG) {
        out[base + i] = (x[base + i] * scale) * weight[i];
    }
}
