//! Layer caches: the head cuts a device's share of the model into a GGUF of its own (all
//! metadata, only the device's tensors); the agent fills that file from streamed chunks,
//! resumably, verifies every tensor's sha256, and keeps it for the next run.
//!
//! On the device, `<cache>/<model id>/` holds `layers-<split>.gguf` + `.idx` (complete; the last
//! few distinct layer splits are kept, and tensors move between them by content hash), and
//! `partial.gguf` + `partial.idx` while a stream is in progress (its byte counts survive a crash
//! or a dropped connection, so the next `prima up` resumes where this one stopped).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::messages::TensorEntry;
use super::sha256::{Sha256, hex, sha256};
use crate::error::{Context, Error, Result};
use crate::gguf::GgufFile;
use crate::gguf::write::{TensorSpec, header};

/// A model's identity: the hash of its header (metadata and tensor table), hex.
pub fn model_id(f: &GgufFile) -> String {
    hex(&sha256(&f.bytes()[..f.data_offset as usize])[..16])
}

/// The share of a model that one device needs.
pub struct Share {
    pub model_id: String,
    /// The GGUF header of the device's file (padded to the alignment).
    pub header: Vec<u8>,
    pub tensors: Vec<TensorEntry>,
}

/// Build the device file's header for the named tensors; `hashes` are their sha256.
pub fn share(f: &GgufFile, names: &[String], hashes: &[[u8; 32]]) -> Result<Share> {
    let specs = names
        .iter()
        .map(|name| {
            let t = f.tensor(name).ok_or_else(|| Error::msg(format!("the model has no tensor `{name}`")))?;
            Ok(TensorSpec { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty, bytes: t.size })
        })
        .collect::<Result<Vec<_>>>()?;
    let (head, offsets) = header(&f.metadata, &specs, f.alignment.max(1));
    let base = head.len() as u64;
    let rel: Vec<(u64, u64)> = offsets.into_iter().zip(&specs).map(|(o, t)| (o, t.bytes)).collect();
    let tensors = names
        .iter()
        .zip(rel)
        .zip(hashes)
        .map(|((name, (off, size)), h)| TensorEntry { name: name.clone(), size, sha256: *h, file_offset: base + off })
        .collect();
    Ok(Share { model_id: model_id(f), header: head, tensors })
}

/// sha256 of each named tensor, memoised per model file (by id, size and mtime) in `memo_dir`.
pub fn tensor_hashes(f: &GgufFile, names: &[String], memo_dir: Option<&Path>) -> Result<Vec<[u8; 32]>> {
    let meta = std::fs::metadata(&f.path).ok();
    let stamp =
        meta.map(|m| format!("{} {} {:?}", model_id(f), m.len(), m.modified().ok())).unwrap_or_else(|| model_id(f));
    let memo_path = memo_dir.map(|d| d.join(format!("{}.sha256", model_id(f))));
    let mut memo: std::collections::HashMap<String, [u8; 32]> = Default::default();
    if let Some(p) = &memo_path
        && let Ok(text) = std::fs::read_to_string(p)
        && text.lines().next() == Some(stamp.as_str())
    {
        for l in text.lines().skip(1) {
            if let Some((h, name)) = l.split_once(' ')
                && let Some(d) = unhex32(h)
            {
                memo.insert(name.to_string(), d);
            }
        }
    }
    let mut out = Vec::with_capacity(names.len());
    let mut fresh = false;
    for name in names {
        let d = match memo.get(name) {
            Some(d) => *d,
            None => {
                let t = f.tensor(name).ok_or_else(|| Error::msg(format!("the model has no tensor `{name}`")))?;
                let d = sha256(f.tensor_data(t));
                memo.insert(name.clone(), d);
                fresh = true;
                d
            }
        };
        out.push(d);
    }
    if fresh && let Some(p) = &memo_path {
        let mut text = format!("{stamp}\n");
        for (n, d) in &memo {
            text.push_str(&format!("{} {n}\n", hex(d)));
        }
        let _ = std::fs::create_dir_all(p.parent().unwrap_or(Path::new(".")));
        let _ = std::fs::write(p, text);
    }
    Ok(out)
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

/// The hash of the `len` bytes at `offset` of `file` (what an interrupted stream left there).
fn hash_prefix(file: &File, offset: u64, len: u64) -> Result<Sha256> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; (len as usize).min(1 << 20)];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        crate::sys::read_exact_at(file, &mut buf[..n], offset + at)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h)
}

/// An index file: the header's hash, then one line per tensor `sha256 bytes-present name`.
struct Index {
    header_hash: String,
    entries: Vec<([u8; 32], u64, String)>,
}

impl Index {
    fn read(p: &Path) -> Option<Index> {
        let text = std::fs::read_to_string(p).ok()?;
        let mut lines = text.lines();
        let header_hash = lines.next()?.to_string();
        let mut entries = Vec::new();
        for l in lines {
            let mut it = l.splitn(3, ' ');
            let (h, n, name) = (it.next()?, it.next()?, it.next()?);
            entries.push((unhex32(h)?, n.parse().ok()?, name.to_string()));
        }
        Some(Index { header_hash, entries })
    }

    fn write(&self, p: &Path) -> Result<()> {
        let mut text = format!("{}\n", self.header_hash);
        for (h, n, name) in &self.entries {
            text.push_str(&format!("{} {n} {name}\n", hex(h)));
        }
        let tmp = p.with_extension("idx.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)?;
        sync_dir(p)
    }

    /// Whether this index lists exactly `tensors`: same names, sizes and hashes, in order.
    fn lists(&self, tensors: &[TensorEntry]) -> bool {
        self.entries.len() == tensors.len()
            && self.entries.iter().zip(tensors).all(|(e, t)| e.0 == t.sha256 && e.1 == t.size && e.2 == t.name)
    }
}

/// Make a rename in `p`'s directory durable (a crash after it cannot bring the old name back).
fn sync_dir(p: &Path) -> Result<()> {
    if let Some(d) = p.parent() {
        crate::sys::sync_dir(d)?;
    }
    Ok(())
}

/// The agent's side of one model check and stream.
pub struct Receiver {
    dir: PathBuf,
    header_hash: String,
    tensors: Vec<TensorEntry>,
    have: Vec<u64>,
    file: Option<File>,
    /// True when a complete cache file already matched: nothing to write.
    complete: bool,
    /// Bytes written since the data file was last synced and the index saved.
    unsynced: u64,
    /// The tensor being received and the hash of its bytes so far (chunks arrive in order, so
    /// each tensor is hashed as it streams instead of being read back when complete).
    hashing: Option<(usize, Sha256)>,
}

impl Receiver {
    /// Compare the request with the cache; prepare a partial file (reusing any tensors the old
    /// cache file already holds) if something is missing.
    pub fn open(cache_dir: &Path, model_id: &str, header: &[u8], tensors: Vec<TensorEntry>) -> Result<Receiver> {
        if model_id.is_empty() || !model_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::msg(format!("bad model id `{model_id}`")));
        }
        let dir = cache_dir.join(model_id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let header_hash = hex(&sha256(header));
        let mut end = header.len() as u64;
        for t in &tensors {
            if t.file_offset < header.len() as u64 {
                return Err(Error::msg(format!("tensor `{}` would overlap the header", t.name)));
            }
            end = end.max(t.file_offset.checked_add(t.size).ok_or_else(|| Error::msg("tensor size overflows"))?);
        }
        let done_path = dir.join(format!("layers-{}.gguf", &header_hash[..16]));
        if let Some(ix) = Index::read(&done_path.with_extension("idx"))
            && ix.header_hash == header_hash
            && ix.lists(&tensors)
            && let Ok(f) = File::open(&done_path)
        {
            let _ = f.set_modified(std::time::SystemTime::now());
            let have = tensors.iter().map(|t| t.size).collect();
            return Ok(Receiver {
                dir,
                header_hash,
                tensors,
                have,
                file: None,
                complete: true,
                unsynced: 0,
                hashing: None,
            });
        }
        let part = dir.join("partial.gguf");
        let mut have = vec![0u64; tensors.len()];
        if let Some(ix) = Index::read(&dir.join("partial.idx"))
            && ix.header_hash == header_hash
            && ix.entries.len() == tensors.len()
            && part.exists()
        {
            for (h, (e, t)) in have.iter_mut().zip(ix.entries.iter().zip(&tensors)) {
                if e.0 == t.sha256 && e.2 == t.name {
                    *h = e.1.min(t.size);
                }
            }
            let file = OpenOptions::new().read(true).write(true).open(&part)?;
            return Ok(Receiver {
                dir,
                header_hash,
                tensors,
                have,
                file: Some(file),
                complete: false,
                unsynced: 0,
                hashing: None,
            });
        }
        // A fresh partial file: the header, then every tensor an older cache file already holds
        // (matched by content hash).
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&part)?;
        file.write_all(header)?;
        file.set_len(end)?;
        for (ix, old) in complete_files(&dir) {
            for (i, t) in tensors.iter().enumerate() {
                if have[i] == t.size {
                    continue;
                }
                if let Some(e) = ix.entries.iter().find(|e| e.0 == t.sha256)
                    && let Some(ot) = old.tensor(&e.2)
                    && ot.size == t.size
                {
                    crate::sys::write_all_at(&file, old.tensor_data(ot), t.file_offset)?;
                    have[i] = t.size;
                }
            }
        }
        let r =
            Receiver { dir, header_hash, tensors, have, file: Some(file), complete: false, unsynced: 0, hashing: None };
        r.save_state()?;
        Ok(r)
    }

    pub fn have(&self) -> &[u64] {
        &self.have
    }

    fn save_state(&self) -> Result<()> {
        Index {
            header_hash: self.header_hash.clone(),
            entries: self.tensors.iter().zip(&self.have).map(|(t, h)| (t.sha256, *h, t.name.clone())).collect(),
        }
        .write(&self.dir.join("partial.idx"))
    }

    /// Write a chunk; chunks of a tensor must arrive in order. The tensor is verified when full.
    pub fn chunk(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        let i = index as usize;
        let (Some(t), Some(file)) = (self.tensors.get(i), self.file.as_ref()) else {
            return Err(Error::msg(format!("chunk for unknown tensor {index}")));
        };
        if offset != self.have[i] || offset + data.len() as u64 > t.size {
            return Err(Error::msg(format!(
                "chunk of `{}` at {offset}+{} does not continue its {} bytes of {}",
                t.name,
                data.len(),
                self.have[i],
                t.size
            )));
        }
        crate::sys::write_all_at(file, data, t.file_offset + offset)?;
        let mut h = match self.hashing.take() {
            Some((j, h)) if j == i => h,
            // A tensor resumed mid-way: hash the part an earlier stream left on disk first.
            _ => hash_prefix(file, t.file_offset, offset)?,
        };
        h.update(data);
        self.have[i] += data.len() as u64;
        if self.have[i] < t.size {
            self.hashing = Some((i, h));
        } else if h.finish() != t.sha256 {
            self.have[i] = 0;
            self.save_state()?;
            return Err(Error::msg(format!("tensor `{}` arrived corrupted (sha256 mismatch)", t.name)));
        }
        // Persist progress about every 64 MiB: the data first, then the index that counts it
        // (a crash in between re-streams, never trusts bytes that were not on disk).
        self.unsynced += data.len() as u64;
        if self.unsynced >= 64 << 20 {
            file.sync_data()?;
            self.save_state()?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// After the last chunk: if everything is present, make it the cache file.
    pub fn finish(&mut self) -> Result<PathBuf> {
        let done = self.dir.join(format!("layers-{}.gguf", &self.header_hash[..16]));
        if self.complete {
            return Ok(done);
        }
        if let Some((t, h)) = self.tensors.iter().zip(&self.have).find(|(t, h)| **h != t.size) {
            self.save_state()?;
            return Err(Error::msg(format!("tensor `{}` incomplete ({h} of {} bytes)", t.name, t.size)));
        }
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        std::fs::rename(self.dir.join("partial.gguf"), &done)?;
        sync_dir(&done)?;
        Index {
            header_hash: self.header_hash.clone(),
            entries: self.tensors.iter().map(|t| (t.sha256, t.size, t.name.clone())).collect(),
        }
        .write(&done.with_extension("idx"))?;
        let _ = std::fs::remove_file(self.dir.join("partial.idx"));
        self.complete = true;
        prune(&self.dir, KEEP_FILES);
        Ok(done)
    }
}

impl Drop for Receiver {
    /// A stream cut short keeps what arrived (synced first) for the next run to resume.
    fn drop(&mut self) {
        if let Some(f) = &self.file
            && self.unsynced > 0
            && f.sync_data().is_ok()
        {
            let _ = self.save_state();
        }
    }
}

/// Cache files kept per model (one per distinct layer split, most recently used first).
const KEEP_FILES: usize = 4;

/// The complete cache files of a model directory with their indexes.
fn complete_files(dir: &Path) -> Vec<(Index, GgufFile)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let is_layers =
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("layers-") && n.ends_with(".gguf"));
        if is_layers
            && let Some(ix) = Index::read(&p.with_extension("idx"))
            && let Ok(g) = GgufFile::open_weights(&p)
        {
            out.push((ix, g));
        }
    }
    out
}

/// Keep the `keep` most recently used cache files of a model.
fn prune(dir: &Path, keep: usize) {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("layers-") && n.ends_with(".gguf"))
        })
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, p) in files.into_iter().skip(keep) {
        let _ = std::fs::remove_file(p.with_extension("idx"));
        let _ = std::fs::remove_file(&p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;
    use crate::gguf::write::GgufWriter;
    use crate::quant::GgmlType;

    fn model() -> GgufFile {
        let mut w = GgufWriter::new();
        w.kv("general.architecture", Value::Str("llama".into())).kv("llama.block_count", Value::U32(2));
        for (i, n) in ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.attn_q.weight"].iter().enumerate() {
            let data: Vec<u8> = (0..16 * 4).map(|b| (b * 7 + i * 13) as u8).collect();
            w.tensor(n, &[16], GgmlType::F32, data);
        }
        GgufFile::from_bytes(w.to_bytes()).unwrap()
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("prima-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn share_is_a_valid_gguf_and_streams_resumably() {
        let f = model();
        let names = vec!["blk.0.attn_q.weight".to_string(), "blk.1.attn_q.weight".to_string()];
        let hashes = tensor_hashes(&f, &names, None).unwrap();
        let s = share(&f, &names, &hashes).unwrap();
        let dir = tmpdir("a");
        let mut r = Receiver::open(&dir, &s.model_id, &s.header, s.tensors.clone()).unwrap();
        assert_eq!(r.have(), &[0, 0]);
        let d0 = f.tensor_data(f.tensor(&names[0]).unwrap()).to_vec();
        let d1 = f.tensor_data(f.tensor(&names[1]).unwrap()).to_vec();
        r.chunk(0, 0, &d0).unwrap();
        r.chunk(1, 0, &d1[..10]).unwrap();
        // Out-of-order chunks are refused.
        assert!(r.chunk(1, 20, &d1[20..]).is_err());
        r.save_state().unwrap();
        drop(r);
        // Resume: the first tensor is there, the second partly.
        let mut r = Receiver::open(&dir, &s.model_id, &s.header, s.tensors.clone()).unwrap();
        assert_eq!(r.have(), &[64, 10]);
        assert!(r.finish().is_err());
        // A corrupted tail is caught and that tensor restarts.
        let mut bad = d1.clone();
        bad[63] ^= 1;
        assert!(r.chunk(1, 10, &bad[10..]).unwrap_err().to_string().contains("corrupted"));
        assert_eq!(r.have(), &[64, 0]);
        r.chunk(1, 0, &d1).unwrap();
        let path = r.finish().unwrap();
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.get_u64("llama.block_count"), Some(2));
        assert_eq!(g.tensor_data(g.tensor(&names[1]).unwrap()), &d1[..]);
        // Next run: complete from the start.
        let r = Receiver::open(&dir, &s.model_id, &s.header, s.tensors.clone()).unwrap();
        assert!(r.complete && r.have() == [64, 64]);
        // A different share reuses what the old file holds.
        let names2 = vec!["token_embd.weight".to_string(), "blk.1.attn_q.weight".to_string()];
        let s2 = share(&f, &names2, &tensor_hashes(&f, &names2, None).unwrap()).unwrap();
        let r = Receiver::open(&dir, &s2.model_id, &s2.header, s2.tensors.clone()).unwrap();
        assert_eq!(r.have(), &[0, 64]);
        // Same header, but the head's hash of one tensor differs from the index: that tensor is
        // not reused from the cache file but streamed again.
        let mut changed = s.tensors.clone();
        changed[1].sha256[0] ^= 1;
        let r = Receiver::open(&dir, &s.model_id, &s.header, changed).unwrap();
        assert!(!r.complete);
        assert_eq!(r.have(), &[64, 0]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
