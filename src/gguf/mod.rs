//! GGUF reader (versions 2 and 3) over a memory map.
//!
//! Every count, length and offset read from the file is checked against the bytes that remain
//! before it is used, so a truncated or hostile file yields an [`Error`] naming the field and
//! its byte offset — never a panic, an out-of-bounds read or a huge allocation.
//! Tensor data is not copied: [`GgufFile::tensor_data`] returns a slice of the map.

mod reader;
pub mod value;
pub mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Context, Error, Result};
use crate::quant::GgmlType;
pub use value::{Value, ValueType};

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor's header entry. `offset` is relative to the start of the data section.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (contiguous), `dims[1]` the number of rows.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub offset: u64,
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }
    pub fn n_rows(&self) -> usize {
        (self.n_elements() / self.dims.first().copied().unwrap_or(1).max(1)) as usize
    }
}

/// The bytes behind a GGUF: a file map, or owned bytes (tests, streamed headers).
enum Backing {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Cheap to clone: header and map are shared (weights hold clones).
#[derive(Clone)]
pub struct GgufFile {
    inner: Arc<GgufHeader>,
}

impl std::ops::Deref for GgufFile {
    type Target = GgufHeader;
    fn deref(&self) -> &GgufHeader {
        &self.inner
    }
}

/// The parsed header and the bytes behind it.
pub struct GgufHeader {
    pub path: PathBuf,
    backing: Backing,
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    /// Arrays [`GgufFile::open_weights`] stepped over, with their lengths.
    pub omitted_arrays: Vec<(String, usize)>,
    meta_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute file offset of the tensor data section.
    pub data_offset: u64,
}

impl GgufFile {
    /// Map and parse a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), true)
    }

    /// [`Self::open`] without the tokenizer's vocabulary arrays (checked, not kept; their
    /// lengths stay readable with [`GgufHeader::array_len`]): for the files a device only runs
    /// layers from, which keep their header for the whole run.
    pub fn open_weights(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), false)
    }

    fn open_with(path: &Path, vocab: bool) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        if len == 0 {
            return Err(Error::msg(format!("{}: file is empty, not a GGUF model", path.display())));
        }
        // SAFETY: the map is read-only; a file truncated under us would SIGBUS, which is the
        // documented contract of every mmap-based model loader (llama.cpp included).
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        Self::parse(path.to_path_buf(), Backing::Map(map), vocab).with_context(|| path.display())
    }

    /// Parse a GGUF held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(PathBuf::from("<memory>"), Backing::Owned(bytes), true)
    }

    fn parse(path: PathBuf, backing: Backing, vocab: bool) -> Result<Self> {
        let header = reader::parse_header(backing.bytes(), vocab)?;
        let meta_index = header.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        let tensor_index = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            inner: Arc::new(GgufHeader {
                path,
                backing,
                version: header.version,
                metadata: header.metadata,
                omitted_arrays: header.omitted_arrays,
                meta_index,
                tensors: header.tensors,
                tensor_index,
                alignment: header.alignment,
                data_offset: header.data_offset,
            }),
        })
    }
}

impl GgufHeader {
    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// The memory map, when the file is mapped (for madvise and prefetch).
    pub fn mmap(&self) -> Option<&Mmap> {
        match &self.backing {
            Backing::Map(m) => Some(m),
            Backing::Owned(_) => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_i64).and_then(|v| u64::try_from(v).ok())
    }

    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key).and_then(Value::as_f64).map(|v| v as f32)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    /// The length of an array, also of one [`GgufFile::open_weights`] left out.
    pub fn array_len(&self, key: &str) -> Option<usize> {
        self.get_array(key)
            .map(|a| a.len())
            .or_else(|| self.omitted_arrays.iter().find(|(k, _)| k == key).map(|(_, n)| *n))
    }

    pub fn get_array(&self, key: &str) -> Option<&[Value]> {
        self.get(key).and_then(Value::as_array)
    }

    /// A required integer key, with an error naming it when absent or of the wrong type.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            None => Err(Error::msg(format!("missing metadata key `{key}`"))),
            Some(v) => v
                .as_i64()
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| Error::msg(format!("metadata key `{key}` should be a non-negative integer, found {v}"))),
        }
    }

    /// `general.architecture`, e.g. "llama" or "qwen2".
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's bytes, a view into the map (bounds were checked at parse time).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        &self.bytes()[start..start + t.size as usize]
    }

    /// Absolute byte range of a tensor in the file.
    pub fn tensor_file_range(&self, t: &TensorInfo) -> std::ops::Range<u64> {
        let start = self.data_offset + t.offset;
        start..start + t.size
    }
}
