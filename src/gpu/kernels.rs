//! WGSL sources of the GPU kernels (`kernels/*.wgsl`), expanded into one module per variant.
//!
//! The matrix kernel has one section per weight format (`//## FORMAT NAME`) and a shared body
//! (`//## BODY`); a variant is `step.wgsl + common.wgsl + the format's section + the body` with
//! the token tile substituted. The texts are embedded at build time (`include_str!`), so the
//! expansion is a few string copies at load. No wgpu here: the naga tests run without `gpu`.

use crate::quant::GgmlType;

const STEP: &str = include_str!("../../kernels/step.wgsl");
const COMMON: &str = include_str!("../../kernels/common.wgsl");
const MATMUL: &str = include_str!("../../kernels/matmul.wgsl");
const TILE_MARK: &str = "/*TILE*/1u";

/// Tokens per workgroup of the prefill variant (the decode variant has one).
pub const PREFILL_TILE: u32 = 8;

/// Weight formats with a GPU matrix kernel; any other stays on the CPU (see [`unsupported`]).
pub const FORMATS: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// The element-wise, normalisation and attention kernels (one source each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    RmsNorm,
    Rope,
    Attention,
    SiluMul,
    Add,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::RmsNorm, Op::Rope, Op::Attention, Op::SiluMul, Op::Add];

    pub fn source(self) -> String {
        let body = match self {
            Op::RmsNorm => include_str!("../../kernels/rms_norm.wgsl"),
            Op::Rope => include_str!("../../kernels/rope.wgsl"),
            Op::Attention => include_str!("../../kernels/attention.wgsl"),
            Op::SiluMul => include_str!("../../kernels/silu_mul.wgsl"),
            Op::Add => include_str!("../../kernels/add.wgsl"),
        };
        format!("{STEP}\n{body}")
    }
}

/// The matrix × vector (`tile` = 1) or matrix × matrix kernel for weights of type `ty`.
pub fn matmul_source(ty: GgmlType, tile: u32) -> Option<String> {
    let section = section(MATMUL, &format!("FORMAT {ty}"))?;
    let body = section_text(MATMUL, "BODY");
    debug_assert!(body.contains(TILE_MARK), "kernels/matmul.wgsl lost its tile marker");
    let body = body.replace(TILE_MARK, &format!("{tile}u"));
    Some(format!("{STEP}\n{COMMON}\n{section}\n{body}"))
}

/// The error for a matrix whose format has no GPU kernel: it names the format.
pub fn unsupported(tensor: &str, ty: GgmlType) -> crate::Error {
    crate::Error::msg(format!(
        "tensor `{tensor}` is {}, which has no GPU kernel yet (GPU formats: {}): its window stays on the CPU",
        ty,
        FORMATS.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" ")
    ))
}

fn section_text<'a>(src: &'a str, name: &str) -> &'a str {
    section(src, name).unwrap_or_else(|| panic!("kernels/matmul.wgsl has no section `{name}`"))
}

/// The text between `//## NAME` and the next `//##` marker.
fn section<'a>(src: &'a str, name: &str) -> Option<&'a str> {
    let mark = format!("//## {name}\n");
    let start = src.find(&mark)? + mark.len();
    let rest = &src[start..];
    Some(&rest[..rest.find("//## ").unwrap_or(rest.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validated with what wgpu grants every native adapter: unpack2x16float is naga's
    /// SHADER_FLOAT16_IN_FLOAT32 (wgpu's downlevel SHADER_F16_IN_F32), not the SHADER_F16 feature.
    fn validate(name: &str, src: &str) {
        let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32,
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    }

    #[test]
    fn every_matmul_variant_validates() {
        for &ty in FORMATS {
            for tile in [1, PREFILL_TILE] {
                validate(&format!("matmul {ty} tile {tile}"), &matmul_source(ty, tile).unwrap());
            }
        }
    }

    #[test]
    fn every_op_validates() {
        for op in Op::ALL {
            validate(&format!("{op:?}"), &op.source());
        }
    }

    #[test]
    fn formats_without_a_section_are_named() {
        assert!(matmul_source(GgmlType::IQ2_XXS, 1).is_none());
        let e = unsupported("blk.0.ffn_up.weight", GgmlType::IQ2_XXS).to_string();
        assert!(e.contains("IQ2_XXS") && e.contains("blk.0.ffn_up.weight"), "{e}");
        for &ty in FORMATS {
            assert!(matmul_source(ty, 1).is_some(), "{ty} is listed but has no section");
        }
    }
}
