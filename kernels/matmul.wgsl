// y = W·x for up to TILE tokens per workgroup: one weight row per workgroup, 64 threads share
// its 32-element chunks, a workgroup reduction per token. TILE = 1 is the decode (matrix ×
// vector) variant, TILE = 8 the prefill (matrix × matrix) one: every dequantized chunk serves
// all the tile's tokens. One section per weight format below supplies `dequant32(block byte
// offset, chunk index within the block)`; the expander (src/gpu/kernels.rs) picks one.

//## FORMAT F32
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 128u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    for (var i = 0u; i < 32u; i++) {
        v[i] = bitcast<f32>(w[(blk >> 2u) + i]);
    }
    return v;
}

//## FORMAT F16
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 64u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    for (var i = 0u; i < 16u; i++) {
        let p = unpack2x16float(w[(blk >> 2u) + i]);
        v[2u * i] = p.x;
        v[2u * i + 1u] = p.y;
    }
    return v;
}

//## FORMAT BF16
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 64u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    for (var i = 0u; i < 16u; i++) {
        let p = w[(blk >> 2u) + i];
        v[2u * i] = bitcast<f32>(p << 16u);
        v[2u * i + 1u] = bitcast<f32>(p & 0xffff0000u);
    }
    return v;
}

//## FORMAT Q8_0
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 34u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk);
    for (var i = 0u; i < 32u; i++) {
        v[i] = d * i8_of(byte_at(blk + 2u + i));
    }
    return v;
}

//## FORMAT Q4_0
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 18u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk);
    for (var j = 0u; j < 16u; j++) {
        let q = byte_at(blk + 2u + j);
        v[j] = d * (f32(q & 0x0fu) - 8.0);
        v[j + 16u] = d * (f32(q >> 4u) - 8.0);
    }
    return v;
}

//## FORMAT Q4_1
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 20u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk);
    let m = f16_at(blk + 2u);
    for (var j = 0u; j < 16u; j++) {
        let q = byte_at(blk + 4u + j);
        v[j] = f32(q & 0x0fu) * d + m;
        v[j + 16u] = f32(q >> 4u) * d + m;
    }
    return v;
}

//## FORMAT Q5_0
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 22u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk);
    let qh = u32_at(blk + 2u);
    for (var j = 0u; j < 16u; j++) {
        let q = byte_at(blk + 6u + j);
        let q0 = (q & 0x0fu) | (((qh >> j) & 1u) << 4u);
        let q1 = (q >> 4u) | (((qh >> (j + 16u)) & 1u) << 4u);
        v[j] = d * (f32(q0) - 16.0);
        v[j + 16u] = d * (f32(q1) - 16.0);
    }
    return v;
}

//## FORMAT Q5_1
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 24u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk);
    let m = f16_at(blk + 2u);
    let qh = u32_at(blk + 4u);
    for (var j = 0u; j < 16u; j++) {
        let q = byte_at(blk + 8u + j);
        let q0 = (q & 0x0fu) | (((qh >> j) & 1u) << 4u);
        let q1 = (q >> 4u) | (((qh >> (j + 16u)) & 1u) << 4u);
        v[j] = f32(q0) * d + m;
        v[j + 16u] = f32(q1) * d + m;
    }
    return v;
}

//## FORMAT IQ4_NL
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 18u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk);
    for (var j = 0u; j < 16u; j++) {
        let q = byte_at(blk + 2u + j);
        v[j] = d * KVALUES_IQ4NL[q & 0x0fu];
        v[j + 16u] = d * KVALUES_IQ4NL[q >> 4u];
    }
    return v;
}

//## FORMAT IQ4_XS
// d, scales_h (u16), scales_l[4], qs[128]; sub-block ib has a 6-bit scale offset by 32.
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 136u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk);
    let lo = (byte_at(blk + 4u + sub / 2u) >> (4u * (sub % 2u))) & 0x0fu;
    let hi = (u16_at(blk + 2u) >> (2u * sub)) & 3u;
    let dl = d * (f32(lo | (hi << 4u)) - 32.0);
    let qs = blk + 8u + 16u * sub;
    for (var j = 0u; j < 16u; j++) {
        let q = byte_at(qs + j);
        v[j] = dl * KVALUES_IQ4NL[q & 0x0fu];
        v[j + 16u] = dl * KVALUES_IQ4NL[q >> 4u];
    }
    return v;
}

//## FORMAT Q2_K
// scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin; element e: scale e/16, 2 bits of
// qs[32*(e/128) + e%32] at shift 2*((e/32)%4).
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 84u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk + 80u);
    let dmin = f16_at(blk + 82u);
    let qs = blk + 16u + 32u * (sub / 4u);
    let shift = 2u * (sub % 4u);
    for (var h = 0u; h < 2u; h++) {
        let sc = byte_at(blk + 2u * sub + h);
        let dl = d * f32(sc & 0x0fu);
        let ml = dmin * f32(sc >> 4u);
        for (var l = 0u; l < 16u; l++) {
            let i = 16u * h + l;
            v[i] = dl * f32((byte_at(qs + i) >> shift) & 3u) - ml;
        }
    }
    return v;
}

//## FORMAT Q3_K
// hmask[32], qs[64], scales[12] (16 packed 6-bit values offset by 32), d.
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 110u;
fn q3k_scale(blk: u32, i: u32) -> f32 {
    var lo: u32;
    if i < 8u {
        lo = byte_at(blk + 96u + i) & 0x0fu;
    } else {
        lo = byte_at(blk + 96u + i - 8u) >> 4u;
    }
    let hi = (byte_at(blk + 104u + i % 4u) >> (2u * (i / 4u))) & 3u;
    return f32(lo | (hi << 4u)) - 32.0;
}
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk + 108u);
    let qs = blk + 32u + 32u * (sub / 4u);
    let shift = 2u * (sub % 4u);
    let hbit = 1u << sub;
    for (var h = 0u; h < 2u; h++) {
        let dl = d * q3k_scale(blk, 2u * sub + h);
        for (var l = 0u; l < 16u; l++) {
            let i = 16u * h + l;
            var q = f32((byte_at(qs + i) >> shift) & 3u);
            if (byte_at(blk + i) & hbit) == 0u {
                q -= 4.0;
            }
            v[i] = dl * q;
        }
    }
    return v;
}

//## FORMAT Q4_K
// d, dmin, scales[12] (6-bit scales and mins), qs[128]: sub-block j is the low (even j) or high
// nibbles of qs[32*(j/2)..].
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 144u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let dl = f16_at(blk) * scale_min_k4(blk + 4u, sub, 0u);
    let ml = f16_at(blk + 2u) * scale_min_k4(blk + 4u, sub, 1u);
    let qs = blk + 16u + 32u * (sub / 2u);
    let shift = 4u * (sub % 2u);
    for (var i = 0u; i < 32u; i++) {
        v[i] = dl * f32((byte_at(qs + i) >> shift) & 0x0fu) - ml;
    }
    return v;
}

//## FORMAT Q5_K
// As Q4_K with a fifth bit per element: bit j of qh[i] for element i of sub-block j.
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 176u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let dl = f16_at(blk) * scale_min_k4(blk + 4u, sub, 0u);
    let ml = f16_at(blk + 2u) * scale_min_k4(blk + 4u, sub, 1u);
    let qs = blk + 48u + 32u * (sub / 2u);
    let shift = 4u * (sub % 2u);
    for (var i = 0u; i < 32u; i++) {
        let q = ((byte_at(qs + i) >> shift) & 0x0fu) | (((byte_at(blk + 16u + i) >> sub) & 1u) << 4u);
        v[i] = dl * f32(q) - ml;
    }
    return v;
}

//## FORMAT Q6_K
// ql[128], qh[64], scales[16] (i8), d; 128-element halves n, quarters k: low/high nibbles of
// ql[64n + 32*(k%2) + l], two bits of qh[32n + l] at shift 2k, minus 32; scale per 16 elements.
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
fn dequant32(blk: u32, sub: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let d = f16_at(blk + 208u);
    let n = sub / 4u;
    let k = sub % 4u;
    let ql = blk + 64u * n + 32u * (k % 2u);
    let qh = blk + 128u + 32u * n;
    let lshift = 4u * (k / 2u);
    for (var h = 0u; h < 2u; h++) {
        let dl = d * i8_of(byte_at(blk + 192u + 2u * sub + h));
        for (var l = 0u; l < 16u; l++) {
            let i = 16u * h + l;
            let q = ((byte_at(ql + i) >> lshift) & 0x0fu) | (((byte_at(qh + i) >> (2u * k)) & 3u) << 4u);
            v[i] = dl * (f32(q) - 32.0);
        }
    }
    return v;
}

//## BODY
struct Shape {
    rows: u32,
    cols: u32,
    row_bytes: u32,
    // Byte offset of this part's first row in the binding.
    w_offset: u32,
    // Output row length (all parts) and where this part's rows start in it.
    out_stride: u32,
    out_offset: u32,
    _pad0: u32,
    _pad1: u32,
}
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<uniform> step: Step;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const TILE: u32 = /*TILE*/1u;
var<workgroup> partial: array<f32, 512>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    let t0 = wg.z * TILE;
    if row >= shape.rows {
        return;
    }
    let subs = BLOCK_ELEMS / 32u;
    let n_chunks = shape.cols / 32u;
    let row_base = shape.w_offset + row * shape.row_bytes;
    var acc: array<f32, TILE>;
    for (var c = lid; c < n_chunks; c += WG) {
        let v = dequant32(row_base + (c / subs) * BLOCK_BYTES, c % subs);
        for (var t = 0u; t < TILE; t++) {
            if t0 + t < step.n_tokens {
                let xo = (t0 + t) * shape.cols + c * 32u;
                var s = 0.0;
                for (var i = 0u; i < 32u; i++) {
                    s += v[i] * x[xo + i];
                }
                acc[t] += s;
            }
        }
    }
    for (var t = 0u; t < TILE; t++) {
        partial[t * WG + lid] = acc[t];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            for (var t = 0u; t < TILE; t++) {
                partial[t * WG + lid] += partial[t * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    if lid < TILE && t0 + lid < step.n_tokens {
        y[(t0 + lid) * shape.out_stride + shape.out_offset + row] = partial[lid * WG];
    }
}
