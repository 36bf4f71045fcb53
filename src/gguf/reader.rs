//! The bounds-checked byte cursor and the header parser.

use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, TensorInfo, Value, ValueType};
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// Nesting limit for arrays of arrays (GGUF allows it; nobody needs more than a couple).
const MAX_ARRAY_DEPTH: u32 = 4;
const MAX_DIMS: u32 = 4;

pub(super) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    /// Arrays left out of `metadata` (see [`parse_header`]), with their lengths.
    pub omitted_arrays: Vec<(String, usize)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

/// Heap the decoded metadata may cost, all values together: an array item costs a whole
/// `Value` (32 bytes) however small it is on disk, so a crafted header could otherwise turn
/// each of its bytes into 32 of heap. Real 128k-vocabulary models need ~30 MiB.
pub const MAX_DECODED_METADATA: usize = 256 << 20;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Heap charged so far against [`MAX_DECODED_METADATA`].
    decoded: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::msg(format!(
                "truncated GGUF: {field} at byte offset {} needs {n} bytes, only {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        Ok(self.take(N, field)?.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A count that will drive a loop: each item needs at least `min_item_bytes` bytes.
    fn count(&mut self, field: &str, min_item_bytes: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(field)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.checked_mul(min_item_bytes.max(1)).is_some_and(|b| b <= self.remaining()));
        fits.ok_or_else(|| {
            Error::msg(format!(
                "corrupt GGUF: {field} at byte offset {at} is {n}, more than the {} bytes left can hold",
                self.remaining()
            ))
        })
    }

    fn str(&mut self, field: &str) -> Result<&'a str> {
        let len = self.count(&format!("{field} length"), 1)?;
        let at = self.pos;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map_err(|_| Error::msg(format!("corrupt GGUF: {field} at byte offset {at} is not valid UTF-8")))
    }

    fn string(&mut self, field: &str) -> Result<String> {
        self.str(field).map(str::to_owned)
    }

    fn value_type(&mut self, field: &str) -> Result<ValueType> {
        let at = self.pos;
        let id = self.u32(field)?;
        ValueType::from_id(id)
            .ok_or_else(|| Error::msg(format!("corrupt GGUF: {field} at byte offset {at} has unknown value type {id}")))
    }

    fn charge(&mut self, bytes: usize, field: &str) -> Result<()> {
        self.decoded = self.decoded.saturating_add(bytes);
        if self.decoded > MAX_DECODED_METADATA {
            return Err(Error::msg(format!(
                "GGUF metadata too large: decoding {field} would take more than {} MiB of memory",
                MAX_DECODED_METADATA >> 20
            )));
        }
        Ok(())
    }

    fn value(&mut self, ty: ValueType, field: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(field)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(field)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(field)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(field)?)),
            ValueType::U32 => Value::U32(self.u32(field)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(field)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(field)?)),
            ValueType::U64 => Value::U64(self.u64(field)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(field)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(field)?)),
            ValueType::Bool => {
                let at = self.pos;
                match self.array::<1>(field)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return Err(Error::msg(format!("corrupt GGUF: {field} at byte offset {at} is bool {b}"))),
                }
            }
            ValueType::Str => {
                let v = self.string(field)?;
                self.charge(v.len(), field)?;
                Value::Str(v)
            }
            ValueType::Array => {
                let (elem, n) = self.array_header(field, depth)?;
                if elem == ValueType::U8 {
                    self.charge(n, field)?;
                    return Ok(Value::Bytes(self.take(n, field)?.to_vec()));
                }
                self.charge(n.saturating_mul(std::mem::size_of::<Value>()), field)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, field, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }

    /// An array's element type and length; its items follow.
    fn array_header(&mut self, field: &str, depth: u32) -> Result<(ValueType, usize)> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(Error::msg(format!("corrupt GGUF: {field} nests arrays deeper than {MAX_ARRAY_DEPTH}")));
        }
        let elem = self.value_type(&format!("{field} element type"))?;
        let min = match elem {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::Array => 12,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::Str => 8,
        };
        Ok((elem, self.count(&format!("{field} array length"), min)?))
    }

    /// Step over a value as [`Self::value`] reads it (same checks), allocating nothing.
    fn skip(&mut self, ty: ValueType, field: &str, depth: u32) -> Result<()> {
        match ty {
            ValueType::Str => drop(self.str(field)?),
            ValueType::Array => {
                let (elem, n) = self.array_header(field, depth)?;
                for _ in 0..n {
                    self.skip(elem, field, depth + 1)?;
                }
            }
            _ => drop(self.value(ty, field, depth)?),
        }
        Ok(())
    }
}

/// Whether a key holds the tokenizer's vocabulary-sized arrays (tokens, scores, token types,
/// merges): 128k-entry vocabularies decode to tens of MB of heap, which a device that only runs
/// layers never reads.
fn is_vocab_array(key: &str, ty: ValueType) -> bool {
    ty == ValueType::Array && key.starts_with("tokenizer.ggml.")
}

/// Parse the header; with `vocab` false the tokenizer's arrays are checked and stepped over,
/// their lengths kept in `omitted_arrays`.
pub(super) fn parse_header(buf: &[u8], vocab: bool) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0, decoded: 0 };
    let magic = c.take(4, "magic")?;
    if magic != GGUF_MAGIC {
        return Err(Error::msg(format!(
            "not a GGUF file: magic is {:?}, expected \"GGUF\"",
            String::from_utf8_lossy(magic)
        )));
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::msg(
                "GGUF version 1 is obsolete (32-bit counts); convert the file with a current llama.cpp",
            ));
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(Error::msg("big-endian GGUF files are not supported"));
        }
        v => return Err(Error::msg(format!("unsupported GGUF version {v} (supported: 2, 3)"))),
    }
    // A tensor info is at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    let n_tensors = c.count("tensor count", 24)?;
    // A key/value pair is at least 8 (key len) + 4 (type) + 1 bytes.
    let n_kv = c.count("metadata count", 13)?;

    let (mut metadata, mut omitted_arrays) = (Vec::with_capacity(n_kv), Vec::new());
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.value_type(&format!("type of `{key}`"))?;
        let field = format!("value of `{key}`");
        if !vocab && is_vocab_array(&key, ty) {
            let (elem, n) = c.array_header(&field, 0)?;
            for _ in 0..n {
                c.skip(elem, &field, 1)?;
            }
            omitted_arrays.push((key, n));
            continue;
        }
        let value = c.value(ty, &field, 0)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_i64() {
            Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
            _ => return Err(Error::msg(format!("corrupt GGUF: general.alignment is {v}, must be a power of two"))),
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor #{i} name"))?;
        let at = c.pos;
        let n_dims = c.u32(&format!("tensor `{name}` dimension count"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::msg(format!(
                "corrupt GGUF: tensor `{name}` has {n_dims} dimensions at byte offset {at} (1 to {MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&format!("tensor `{name}` dimension {d}"))?);
        }
        let at = c.pos;
        let type_id = c.u32(&format!("tensor `{name}` type"))?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| {
            Error::msg(format!("tensor `{name}` has unknown ggml type id {type_id} (byte offset {at})"))
        })?;
        let offset = c.u64(&format!("tensor `{name}` data offset"))?;
        let size = tensor_size(&name, &dims, ty)?;
        if offset % alignment != 0 {
            return Err(Error::msg(format!(
                "corrupt GGUF: tensor `{name}` data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        tensors.push(TensorInfo { name, dims, ty, offset, size });
    }

    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    for t in &tensors {
        let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.size));
        if end.is_none_or(|e| e > file_len) {
            return Err(Error::msg(format!(
                "truncated GGUF: tensor `{}` ({} bytes at data offset {}) extends past the end of the file ({file_len} bytes)",
                t.name, t.size, t.offset
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(Error::msg(format!("corrupt GGUF: tensor `{}` appears twice", t.name)));
        }
    }
    Ok(Header { version, metadata, omitted_arrays, tensors, alignment, data_offset })
}

fn tensor_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64> {
    let n = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let n = n
        .filter(|&n| n < (1u64 << 48))
        .ok_or_else(|| Error::msg(format!("corrupt GGUF: tensor `{name}` has absurd dimensions {dims:?}")))?;
    let (bs, ts) = ty.block_layout();
    if !dims[0].is_multiple_of(bs as u64) {
        return Err(Error::msg(format!(
            "corrupt GGUF: tensor `{name}` row length {} is not a multiple of the {ty} block size {bs}",
            dims[0]
        )));
    }
    Ok(n / bs as u64 * ts as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header whose only value is an array of `n` u8.
    fn byte_array_header(n: usize) -> Vec<u8> {
        let mut b = GGUF_MAGIC.to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'a');
        b.extend_from_slice(&(ValueType::Array as u32).to_le_bytes());
        b.extend_from_slice(&(ValueType::U8 as u32).to_le_bytes());
        b.extend_from_slice(&(n as u64).to_le_bytes());
        b.resize(b.len() + n, 7);
        b
    }

    #[test]
    fn decoded_metadata_has_a_budget() {
        let h = parse_header(&byte_array_header(1000), true).unwrap();
        assert_eq!(h.metadata[0].1, Value::Bytes(vec![7; 1000]));
        // Byte arrays cost their bytes: 9 MB on disk is 9 MB decoded (it was 288 MiB of `Value`s).
        assert!(parse_header(&byte_array_header(9 << 20), true).is_ok());
        // The budget still holds for what does not fit it.
        let e = parse_header(&byte_array_header(300 << 20), true).err().expect("over budget").to_string();
        assert!(e.contains("metadata too large"), "{e}");
        // Arrays of other small items still cost a `Value` each.
        let mut b = byte_array_header(9 << 20);
        let at = b.len() - (9 << 20) - 12;
        b[at..at + 4].copy_from_slice(&(ValueType::I8 as u32).to_le_bytes());
        let e = parse_header(&b, true).err().expect("over budget").to_string();
        assert!(e.contains("metadata too large"), "{e}");
    }
}
