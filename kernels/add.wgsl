// x += y element-wise over n_tokens rows of `width`; y repeats every `y_len` elements (y_len =
// width adds a bias to each row, y_len = 0 means a full n_tokens × width operand).
struct Shape {
    width: u32,
    y_len: u32,
    _pad0: u32,
    _pad1: u32,
}
@group(0) @binding(0) var<uniform> shape: Shape;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if i >= step.n_tokens * shape.width {
        return;
    }
    var j = i;
    if shape.y_len != 0u {
        j = i % shape.y_len;
    }
    x[i] += y[j];
}
