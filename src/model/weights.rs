//! Views of the model's tensors in the memory map, checked against the expected shapes.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::quant::{self, GgmlType};

/// A weight matrix (`rows` outputs × `cols` inputs, row-major in its ggml type), read in place.
#[derive(Clone)]
pub struct Weight {
    file: GgufFile,
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    start: usize,
    len: usize,
}

impl crate::cpu::matmul::AsMatrix for Weight {
    fn matrix(&self) -> crate::cpu::matmul::Matrix<'_> {
        let (ty, rows, cols, row_bytes) = (self.ty, self.rows, self.cols, self.row_bytes);
        crate::cpu::matmul::Matrix { ty, rows, cols, row_bytes, data: self.data() }
    }
}

impl Weight {
    /// The matrix `name` with shape `[cols, rows]` in ggml order.
    pub fn load(f: &GgufFile, name: &str, cols: usize, rows: usize) -> Result<Weight> {
        let t = f.tensor(name).ok_or_else(|| Error::msg(format!("tensor `{name}` is missing")))?;
        if t.row_len() != cols || t.n_rows() != rows {
            return Err(Error::msg(format!("tensor `{name}` has shape {:?}, expected [{cols}, {rows}]", t.dims)));
        }
        quant::check_supported(t.ty).map_err(|e| e.context(format!("tensor `{name}`")))?;
        let range = f.tensor_file_range(t);
        Ok(Weight {
            file: f.clone(),
            name: name.to_string(),
            ty: t.ty,
            rows,
            cols,
            row_bytes: t.ty.row_bytes(cols).expect("row length checked by the GGUF reader"),
            start: range.start as usize,
            len: (range.end - range.start) as usize,
        })
    }

    /// The mapped file the matrix is read from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn data(&self) -> &[u8] {
        &self.file.bytes()[self.start..self.start + self.len]
    }

    pub fn row(&self, r: usize) -> &[u8] {
        &self.data()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Absolute byte range in the model file (for prefetch and cache streaming).
    pub fn file_range(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }

    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        quant::dequantize_row(self.ty, self.row(r), out);
    }
}

/// A 1-D tensor (norm weights, biases) copied out as f32: a few KB per layer.
pub fn load_vector(f: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = f.tensor(name).ok_or_else(|| Error::msg(format!("tensor `{name}` is missing")))?;
    if t.n_elements() != len as u64 {
        return Err(Error::msg(format!("tensor `{name}` has shape {:?}, expected [{len}]", t.dims)));
    }
    quant::check_supported(t.ty).map_err(|e| e.context(format!("tensor `{name}`")))?;
    let mut out = vec![0f32; len];
    quant::dequantize_row(t.ty, f.tensor_data(t), &mut out);
    Ok(out)
}

pub fn load_optional_vector(f: &GgufFile, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
    if f.tensor(name).is_some() { load_vector(f, name, len).map(Some) } else { Ok(None) }
}
