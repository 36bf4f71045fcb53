use prima::gguf::{GgufFile, Value, write::GgufWriter};
use prima::quant::GgmlType;

use crate::common;

#[test]
fn reads_every_fixture_model() {
    for entry in std::fs::read_dir(common::fixtures().join("models")).unwrap() {
        let path = entry.unwrap().path();
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(f.version, 3);
        if f.architecture().is_some() {
            assert!(f.tensor("token_embd.weight").is_some(), "{}", path.display());
        }
    }
}

#[test]
fn compact_llama_header() {
    let f = GgufFile::open(common::model("c-llama-q4_k_m.gguf")).unwrap();
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.get_u64("llama.block_count"), Some(2));
    assert_eq!(f.get_u64("llama.embedding_length"), Some(256));
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.dims, vec![256, 256]);
    assert_eq!(q.ty, GgmlType::Q4_K);
    // 256 rows of one 144-byte Q4_K block each.
    assert_eq!(f.tensor_data(q).len(), 144 * 256);
    assert_eq!(f.tensor("output.weight").unwrap().ty, GgmlType::Q6_K);
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 2048);
}

fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::Str("llama".into()));
    w.kv("llama.block_count", Value::U32(1));
    w.kv("tokenizer.ggml.scores", Value::Array(prima::gguf::ValueType::F32, vec![Value::F32(0.5); 3]));
    w.tensor("a", &[32, 2], GgmlType::F32, vec![0u8; 256]);
    w.tensor("b", &[32], GgmlType::Q8_0, vec![1u8; 34]);
    w.to_bytes()
}

#[test]
fn writer_round_trips() {
    let f = GgufFile::from_bytes(sample_file()).unwrap();
    assert_eq!(f.get_u64("llama.block_count"), Some(1));
    assert_eq!(f.tensors.len(), 2);
    let b = f.tensor("b").unwrap();
    assert_eq!(f.tensor_data(b), &[1u8; 34][..]);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample_file();
    let full = GgufFile::from_bytes(bytes.clone()).unwrap();
    let data_end = full.data_offset as usize;
    for cut in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..cut].to_vec());
        // Cuts inside the header must fail; cuts in the tensor data must fail too
        // (the last tensor would extend past the end).
        assert!(r.is_err(), "truncation at {cut} (data at {data_end}) was accepted");
        let msg = r.err().unwrap().to_string();
        assert!(msg.contains("GGUF") || msg.contains("magic"), "{cut}: {msg}");
    }
}

#[test]
fn absurd_counts_and_bad_fields_are_errors() {
    let good = sample_file();
    let patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        GgufFile::from_bytes(b).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(patch(0, b"GGUX").contains("magic"));
    assert!(patch(4, &7u32.to_le_bytes()).contains("version 7"));
    assert!(patch(8, &u64::MAX.to_le_bytes()).contains("tensor count"));
    assert!(patch(16, &(1u64 << 40).to_le_bytes()).contains("metadata count"));
    // First key length.
    assert!(patch(24, &(1u64 << 50).to_le_bytes()).contains("metadata key #0 length"));
    // Value type of the first key ("general.architecture" = 20 bytes).
    assert!(patch(24 + 8 + 20, &99u32.to_le_bytes()).contains("unknown value type 99"));
}

#[test]
fn unknown_tensor_type_is_named() {
    let mut w = GgufWriter::new();
    w.tensor("t", &[32], GgmlType::F32, vec![0u8; 128]);
    let mut b = w.to_bytes();
    // header: magic 4, version 4, counts 16, name 8+1, n_dims 4, dim 8 -> type at 45
    b[45..49].copy_from_slice(&77u32.to_le_bytes());
    let e = GgufFile::from_bytes(b).err().unwrap().to_string();
    assert!(e.contains("unknown ggml type id 77") && e.contains("`t`"), "{e}");
}

#[test]
fn open_weights_steps_over_the_vocabulary() {
    let path = common::model("c-llama-q4_k_m.gguf");
    let (full, weights) = (GgufFile::open(&path).unwrap(), GgufFile::open_weights(&path).unwrap());
    assert!(weights.get_array("tokenizer.ggml.tokens").is_none());
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"] {
        assert_eq!(weights.array_len(key), full.get_array(key).map(|a| a.len()), "{key}");
    }
    // Everything else is the same: scalars, tensors and where their data is.
    assert_eq!(weights.metadata.len() + weights.omitted_arrays.len(), full.metadata.len());
    assert_eq!(weights.get_str("tokenizer.ggml.model"), full.get_str("tokenizer.ggml.model"));
    assert_eq!(weights.data_offset, full.data_offset);
    assert_eq!(weights.tensors.len(), full.tensors.len());
    let cfg = |f: GgufFile| prima::model::Model::from_gguf(f).unwrap().config;
    assert_eq!(cfg(weights).n_vocab, cfg(full).n_vocab);
}

#[test]
fn open_weights_still_checks_what_it_skips() {
    let tokens = |items: Vec<Value>| {
        let mut w = GgufWriter::new();
        w.kv("general.architecture", Value::Str("llama".into()));
        w.kv("tokenizer.ggml.tokens", Value::Array(prima::gguf::ValueType::Str, items));
        w.tensor("a", &[32], GgmlType::F32, vec![0u8; 128]);
        w.to_bytes()
    };
    let dir = std::env::temp_dir().join(format!("prima-gguf-skip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let open = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        GgufFile::open_weights(&p).map(|f| f.array_len("tokenizer.ggml.tokens")).map_err(|e| format!("{e:#}"))
    };
    let good = tokens(vec![Value::Str("ab".into()), Value::Str("cd".into())]);
    assert_eq!(open("good.gguf", &good), Ok(Some(2)));
    // "cd" → invalid UTF-8 inside the skipped array.
    let at = good.windows(2).position(|w| w == b"cd").unwrap();
    let mut bad = good.clone();
    bad[at] = 0xff;
    let e = open("bad-utf8.gguf", &bad).unwrap_err();
    assert!(e.contains("tokenizer.ggml.tokens") && e.contains("UTF-8"), "{e}");
    // A cut inside the array.
    let e = open("cut.gguf", &good[..at]).unwrap_err();
    assert!(e.contains("tokenizer.ggml.tokens") && e.contains("GGUF"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
