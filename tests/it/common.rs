//! Shared helpers: fixture paths and golden JSON loading.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn model(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

pub fn golden(name: &str) -> serde_json::Value {
    let path = fixtures().join("golden").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
