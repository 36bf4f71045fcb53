//! Kernel dispatch: for each weight type, the fastest kernel table this CPU runs, chosen once
//! at run time from its features (never from compile-time `target-cpu`), so one binary serves
//! every device of a mixed cluster. Per-ISA files hold the SIMD code; the scalar oracle of
//! `quant` stays the fallback and the reference every SIMD path is tested against.

use std::sync::OnceLock;

use crate::quant::{GgmlType, Kernels, scalar_kernels};

/// `dot(w, act)` of one weight row with one activation row.
pub type VecDot = fn(usize, &[u8], &[u8]) -> f32;

/// `out[t] = dot(w, act[t*stride..])` for four activation rows `stride` bytes apart: one pass
/// over the weight row for four tokens (the prefill tile).
pub type VecDotX4 = fn(usize, &[u8], &[u8], usize, &mut [f32; 4]);

/// `out[r] = dot(w[r], act)` for four weight rows `row_bytes` apart and one activation row:
/// the decode matrix-vector product's step, one pass over the activation for four rows.
pub type VecDotRows4 = fn(usize, &[u8], usize, &[u8], &mut [f32; 4]);

/// Prefill tiles of a weight type: the activation rows of a matrix product are prepared once
/// into the tiles' layout, then each task multiplies a range of weight rows by every token.
#[derive(Clone, Copy, Debug)]
pub struct Tiles {
    /// Bytes of `n_tokens` prepared activation rows of `cols` elements: `(cols, n_tokens)`.
    pub prepared_bytes: fn(usize, usize) -> usize,
    /// `(partner rows, partner row bytes, n_tokens, cols, out)`: prepare every token's row.
    pub prepare: fn(&[u8], usize, usize, usize, &mut [u8]),
    /// `(weights, row_bytes, cols, rows, prepared, n_tokens, out, out_stride)`:
    /// `out[t * out_stride + r] = dot(w[r], act[t])` for every `r` in `rows` and `t < n_tokens`.
    pub rows_tokens: TileRowsFn,
}

/// See [`Tiles::rows_tokens`].
///
/// # Safety
/// `out` must have room for `n_tokens × out_stride` values, and no other thread may write the
/// elements `(t, r)` for `r` in `rows` while this runs.
pub type TileRowsFn = unsafe fn(&[u8], usize, usize, std::ops::Range<usize>, &[u8], usize, *mut f32, usize);
/// Float rows (F32, F16, BF16) of any length: `simd` over the multiple of 8 elements, the
/// scalar product over the rest.
pub(super) fn float_dot(n: usize, w: &[u8], act: &[u8], ty: GgmlType, simd: VecDot) -> f32 {
    simd(n / 8 * 8, w, act) + float_tail(n, w, act, ty)
}

/// [`float_dot`] of one weight row with four activation rows `stride` bytes apart.
pub(super) fn float_dot_x4(
    n: usize,
    w: &[u8],
    act: &[u8],
    stride: usize,
    out: &mut [f32; 4],
    ty: GgmlType,
    simd: VecDotX4,
) {
    simd(n / 8 * 8, w, act, stride, out);
    for (t, o) in out.iter_mut().enumerate() {
        *o += float_tail(n, w, &act[t * stride..], ty);
    }
}

/// The (`vec_dot`, `vec_dot_x4`) pair of a float type `$ty` from kernels over multiples of 8
/// elements: [`float_dot`] and [`float_dot_x4`] around them.
macro_rules! float_entries {
    ($ty:expr, $one:ident, $four:ident) => {
        (
            |n, w, a| super::kernels::float_dot(n, w, a, $ty, $one),
            |n, w, a, s, o| super::kernels::float_dot_x4(n, w, a, s, o, $ty, $four),
        )
    };
}
#[allow(unused_imports)] // used by the per-ISA files of one architecture or the other
pub(super) use float_entries;

/// `Σ w·x` over the elements past the multiple of 8.
fn float_tail(n: usize, w: &[u8], act: &[u8], ty: GgmlType) -> f32 {
    let width = ty.row_bytes(1).unwrap_or(4);
    let at = |b: &[u8], i: usize| -> f32 {
        let b = &b[width * i..];
        match ty {
            GgmlType::F16 => crate::quant::f16_bits_to_f32([b[0], b[1]]),
            GgmlType::BF16 => f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16),
            _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    };
    (n / 8 * 8..n).map(|i| at(w, i) * at(act, i)).sum()
}

/// A weight type's kernels on this CPU.
#[derive(Clone, Copy, Debug)]
pub struct CpuKernels {
    /// `dequantize_row`, `quantize_partner` (always the scalar, x86-exact ones) and `vec_dot`.
    pub k: Kernels,
    /// The four-token tile, where the ISA has one.
    pub vec_dot_x4: Option<VecDotX4>,
    /// Which instruction set `vec_dot` uses.
    pub isa: &'static str,
}

impl CpuKernels {
    fn scalar(ty: GgmlType) -> Option<CpuKernels> {
        Some(CpuKernels { k: *scalar_kernels(ty)?, vec_dot_x4: None, isa: "scalar" })
    }

    /// `vec_dot` of one weight row with four activation rows.
    #[inline]
    pub fn dot_x4(&self, n: usize, w: &[u8], act: &[u8], stride: usize, out: &mut [f32; 4]) {
        match self.vec_dot_x4 {
            Some(f) => f(n, w, act, stride, out),
            None => {
                for (t, o) in out.iter_mut().enumerate() {
                    *o = (self.k.vec_dot)(n, w, &act[t * stride..]);
                }
            }
        }
    }
}

/// An instruction-set variant the CPU supports: its name and table builder (None for types
/// it has no kernel for).
#[derive(Clone, Copy)]
pub struct Isa {
    pub name: &'static str,
    pub table: fn(GgmlType) -> Option<CpuKernels>,
    /// The prefill tiles this variant has (None for types without).
    pub tiles: fn(GgmlType) -> Option<Tiles>,
}

fn no_tiles(_: GgmlType) -> Option<Tiles> {
    None
}

fn scalar_table(ty: GgmlType) -> Option<CpuKernels> {
    CpuKernels::scalar(ty)
}

/// Every variant this CPU can run, from the scalar oracle to the most capable.
pub fn available_isas() -> Vec<Isa> {
    #[allow(unused_mut)]
    let mut v = vec![Isa { name: "scalar", table: scalar_table, tiles: no_tiles }];
    #[cfg(target_arch = "x86_64")]
    {
        if super::x86_avx2::detected() {
            v.push(Isa { name: "avx2", table: super::x86_avx2::table, tiles: no_tiles });
        }
        // The two VNNI flavours carry the same kernels: where both exist the AVX-512 one
        // (pushed last) is chosen; AVX-VNNI serves the CPUs without AVX-512.
        if super::x86_avxvnni::detected() {
            v.push(Isa { name: "avxvnni", table: super::x86_avxvnni::table, tiles: no_tiles });
        }
        if super::x86_avx512::detected() {
            v.push(Isa { name: "avx512vnni", table: super::x86_avx512::table, tiles: super::x86_avx512_tiles::tiles });
        }
        if super::x86_avx512bf16::detected() {
            v.push(Isa { name: "avx512bf16", table: super::x86_avx512bf16::table, tiles: no_tiles });
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push(Isa { name: "neon", table: super::aarch64_neon::table, tiles: no_tiles });
        if super::aarch64_neon::dotprod_detected() {
            v.push(Isa { name: "neon-dotprod", table: super::aarch64_neon::table_dotprod, tiles: no_tiles });
        }
    }
    v
}

struct Chosen {
    isa: &'static str,
    by_type: Vec<Option<CpuKernels>>,
    tiles_by_type: Vec<Option<Tiles>>,
    rows4_by_type: Vec<Option<VecDotRows4>>,
}

static CHOSEN: OnceLock<Chosen> = OnceLock::new();

/// Build the table: for each type, the most capable variant that has a kernel for it.
/// `PRIMA_KERNELS=scalar|avx2|…` caps the choice at that variant (benchmarks, debugging).
fn choose() -> Chosen {
    let mut isas = available_isas();
    if let Ok(want) = std::env::var("PRIMA_KERNELS")
        && let Some(pos) = isas.iter().position(|i| i.name == want)
    {
        isas.truncate(pos + 1);
    }
    let types = || (0..64u32).map(|id| GgmlType::ALL.iter().copied().find(|t| *t as u32 == id));
    // Batch invariance: a type the tiles run (batches of 4+ tokens) runs the tiles' summation
    // order in every other kernel too, whether or not `PRIMA_TILES` turns the tiles off.
    // `PRIMA_TILE_ORDER=1` takes that order on CPUs without the tiles too (measuring its cost).
    let forced = std::env::var("PRIMA_TILE_ORDER").is_ok_and(|v| v == "1");
    let where_tiled =
        |ty: GgmlType| (forced || isas.iter().any(|isa| (isa.tiles)(ty).is_some())).then(|| tile_order(ty)).flatten();
    let by_type = types()
        .map(|ty| {
            let ty = ty?;
            match where_tiled(ty) {
                Some((k, _)) => Some(k),
                None => isas.iter().rev().find_map(|isa| (isa.table)(ty)),
            }
        })
        .collect();
    // Tiles come with the ISA that has them; `PRIMA_TILES=0` turns them off (A/B benchmarks).
    let tiles_on = std::env::var("PRIMA_TILES").map_or(true, |v| v != "0");
    let tiles_by_type =
        types().map(|ty| isas.iter().rev().find_map(|isa| (isa.tiles)(ty?)).filter(|_| tiles_on)).collect();
    let rows4_by_type = types().map(|ty| where_tiled(ty?).map(|(_, r4)| r4)).collect();
    Chosen { isa: isas.last().map_or("scalar", |i| i.name), by_type, tiles_by_type, rows4_by_type }
}

/// The one-row and four-row kernels in the summation order of the prefill tiles, for the
/// types the tiles run; the dispatch uses them where the tiles exist, and they run on any
/// AVX2 CPU (so tests check them everywhere). None elsewhere.
pub fn tile_order(ty: GgmlType) -> Option<(CpuKernels, VecDotRows4)> {
    #[cfg(target_arch = "x86_64")]
    return super::x86_tile_order::kernels(ty);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// Whether this CPU has the AVX-512 features the prefill tiles need (tests check that their
/// cases ran where it does).
pub fn tiles_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::x86_avx512_tiles::detected();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The kernels for `ty` on this CPU, or None if the engine cannot run the type.
#[inline]
pub fn get(ty: GgmlType) -> Option<&'static CpuKernels> {
    CHOSEN.get_or_init(choose).by_type.get(ty as usize)?.as_ref()
}

/// Dot product of a weight row of type `ty` (n elements) with an activation row already in
/// `quant::vec_dot_type(ty)`, with the fastest one-row kernel this CPU runs; the scalar
/// oracle is `quant::scalar_kernels(ty).vec_dot`. Panics for types the engine cannot run.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    let k = get(ty).unwrap_or_else(|| panic!("no kernel for {ty}"));
    (k.k.vec_dot)(n, w, act)
}

/// The prefill tiles for `ty` on this CPU, if it has them.
#[inline]
pub fn tiles(ty: GgmlType) -> Option<&'static Tiles> {
    CHOSEN.get_or_init(choose).tiles_by_type.get(ty as usize)?.as_ref()
}

/// The chosen variant and which types run which ISA, e.g.
/// `avx512vnni (avx512vnni: Q4_0 Q8_0 …; avx2: …; scalar: Q2_K …)`.
pub fn summary() -> String {
    let c = CHOSEN.get_or_init(choose);
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for ty in GgmlType::ALL {
        if let Some(k) = get(ty) {
            match groups.iter_mut().find(|g| g.0 == k.isa) {
                Some(g) => g.1.push(ty.to_string()),
                None => groups.push((k.isa, vec![ty.to_string()])),
            }
        }
    }
    let parts: Vec<String> = groups.iter().map(|(isa, tys)| format!("{isa}: {}", tys.join(" "))).collect();
    format!("{} ({})", c.isa, parts.join("; "))
}

/// The four-row decode kernel for `ty`, where the type runs the tiles' order (see
/// [`tile_order`]); `PRIMA_ROWS4=0` turns them off (A/B benchmarks).
#[inline]
pub fn rows4(ty: GgmlType) -> Option<VecDotRows4> {
    static ON: OnceLock<bool> = OnceLock::new();
    if !*ON.get_or_init(|| std::env::var("PRIMA_ROWS4").map_or(true, |v| v != "0")) {
        return None;
    }
    *CHOSEN.get_or_init(choose).rows4_by_type.get(ty as usize)?
}
