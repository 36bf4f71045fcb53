//! A small GGUF v3 writer: synthetic test models, and per-device layer caches that hold a
//! subset of a model's tensors with its full metadata.

use std::io::Write;

use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, Value, ValueType};
use crate::error::Result;
use crate::quant::GgmlType;

pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
    alignment: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter { metadata: Vec::new(), tensors: Vec::new(), alignment: DEFAULT_ALIGNMENT }
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        if key == "general.alignment"
            && let Some(a) = value.as_i64()
        {
            self.alignment = a as u64;
        }
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Add a tensor; `dims` in ggml order (row length first), `data` already in `ty`'s layout.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.to_string(), dims.to_vec(), ty, data));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out).expect("writing to a Vec cannot fail");
        out
    }

    pub fn write_to(&self, out: &mut impl Write) -> Result<()> {
        let specs: Vec<TensorSpec> = self
            .tensors
            .iter()
            .map(|(name, dims, ty, data)| TensorSpec {
                name: name.clone(),
                dims: dims.clone(),
                ty: *ty,
                bytes: data.len() as u64,
            })
            .collect();
        write_streaming(&self.metadata, &specs, self.alignment, out, |i, out| Ok(out.write_all(&self.tensors[i].3)?))
    }
}

/// A tensor to be written: its data comes later, from a callback.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub bytes: u64,
}

/// The header of a GGUF v3 file (padded to `alignment`) and each tensor's data offset relative
/// to the end of it.
pub fn header(metadata: &[(String, Value)], specs: &[TensorSpec], alignment: u64) -> (Vec<u8>, Vec<u64>) {
    let mut head = Vec::new();
    head.extend_from_slice(GGUF_MAGIC);
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(specs.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut head, k);
        head.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
        put_value(&mut head, v);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in specs {
        put_str(&mut head, &t.name);
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&(t.ty as u32).to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.bytes).div_ceil(alignment) * alignment;
    }
    let pad = (head.len() as u64).div_ceil(alignment) * alignment - head.len() as u64;
    head.resize(head.len() + pad as usize, 0);
    (head, offsets)
}

/// Write a GGUF whose tensor data is produced one tensor at a time by `data(i, out)` (which
/// must write exactly `specs[i].bytes` bytes), so multi-GB files never sit in memory.
pub fn write_streaming<W: Write>(
    metadata: &[(String, Value)],
    specs: &[TensorSpec],
    alignment: u64,
    out: &mut W,
    mut data: impl FnMut(usize, &mut W) -> Result<()>,
) -> Result<()> {
    let (head, offsets) = header(metadata, specs, alignment);
    out.write_all(&head)?;
    let mut written = 0u64;
    for (i, off) in offsets.into_iter().enumerate() {
        out.write_all(&vec![0u8; (off - written) as usize])?;
        data(i, out)?;
        written = off + specs[i].bytes;
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::Str(s) => put_str(out, s),
        Value::Bytes(b) => {
            out.extend_from_slice(&(ValueType::U8 as u32).to_le_bytes());
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        }
        Value::Array(ty, items) => {
            out.extend_from_slice(&(*ty as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                debug_assert_eq!(item.value_type(), *ty);
                put_value(out, item);
            }
        }
    }
}

/// Convenience for arrays of strings (token lists, merges).
pub fn str_array<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(ValueType::Str, items.iter().map(|s| Value::Str(s.as_ref().to_string())).collect())
}
