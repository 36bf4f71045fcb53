// Shared loaders, prepended to every matrix kernel. GGUF blocks are bound as raw bytes in an
// array<u32> (WGSL has no u8/u16 storage): fields are read by byte offset and may straddle two
// words. f16 values go through unpack2x16float so SHADER_F16 stays optional.

@group(0) @binding(0) var<storage, read> w: array<u32>;

fn byte_at(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

fn u16_at(off: u32) -> u32 {
    if (off & 3u) == 3u {
        return byte_at(off) | (byte_at(off + 1u) << 8u);
    }
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xffffu;
}

fn u32_at(off: u32) -> u32 {
    let s = (off & 3u) * 8u;
    if s == 0u {
        return w[off >> 2u];
    }
    return (w[off >> 2u] >> s) | (w[(off >> 2u) + 1u] << (32u - s));
}

fn f16_at(off: u32) -> f32 {
    return unpack2x16float(u16_at(off)).x;
}

fn i8_of(b: u32) -> f32 {
    return f32(i32(b << 24u) >> 24u);
}

// K-quants' packed 6-bit scale (is_min = 0) or min (is_min = 1) of sub-block j (ggml's get_scale_min_k4).
fn scale_min_k4(scales: u32, j: u32, is_min: u32) -> f32 {
    if j < 4u {
        return f32(byte_at(scales + j + 4u * is_min) & 63u);
    }
    if is_min == 0u {
        return f32((byte_at(scales + j + 4u) & 0x0fu) | ((byte_at(scales + j - 4u) >> 6u) << 4u));
    }
    return f32((byte_at(scales + j + 4u) >> 4u) | ((byte_at(scales + j) >> 6u) << 4u));
}

var<private> KVALUES_IQ4NL: array<f32, 16> = array<f32, 16>(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
                                     1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);
