//! `prima inspect MODEL`: metadata and a tensor summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use argh::FromArgs;

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::quant::GgmlType;

/// print a GGUF file's metadata and a summary of its tensors
#[derive(FromArgs)]
#[argh(subcommand, name = "inspect")]
pub struct InspectArgs {
    /// the GGUF file
    #[argh(positional)]
    pub model: String,
    /// list every tensor, not only the summary
    #[argh(switch)]
    pub tensors: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let f = GgufFile::open(&args.model)?;
    print!("{}", render(&f, args.tensors));
    Ok(())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.2} {}", UNITS[u]) }
}

/// The report, as text (snapshot-tested).
pub fn render(f: &GgufFile, all_tensors: bool) -> String {
    let mut s = String::new();
    let total: u64 = f.tensors.iter().map(|t| t.size).sum();
    let params: u64 = f.tensors.iter().map(|t| t.n_elements()).sum();
    let _ = writeln!(s, "GGUF v{}, {} metadata keys, {} tensors", f.version, f.metadata.len(), f.tensors.len());
    let _ = writeln!(
        s,
        "{} parameters, {} of tensor data ({:.2} bits per weight), alignment {}",
        params,
        human_bytes(total),
        if params > 0 { total as f64 * 8.0 / params as f64 } else { 0.0 },
        f.alignment
    );
    let _ = writeln!(s, "\nmetadata:");
    let width = f.metadata.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &f.metadata {
        let _ = writeln!(s, "  {k:width$}  {v}");
    }

    // Per-type counts and bytes.
    let mut by_type: BTreeMap<GgmlType, (usize, u64)> = BTreeMap::new();
    for t in &f.tensors {
        let e = by_type.entry(t.ty).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    let _ = writeln!(s, "\ntensor types:");
    for (ty, (n, bytes)) in &by_type {
        let _ = writeln!(s, "  {:8} {n:5} tensors  {:>12}", ty.to_string(), human_bytes(*bytes));
    }

    // Non-layer tensors, then one line per layer (users size windows by bytes per layer).
    let mut layers: BTreeMap<u64, (u64, BTreeMap<GgmlType, usize>)> = BTreeMap::new();
    let _ = writeln!(s, "\ntensors outside layers:");
    for t in &f.tensors {
        match t.name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|i| i.parse().ok()) {
            Some(i) => {
                let e = layers.entry(i).or_default();
                e.0 += t.size;
                *e.1.entry(t.ty).or_default() += 1;
            }
            None => {
                let _ = writeln!(s, "  {:32} {:>8} {:?} {:>12}", t.name, t.ty.to_string(), t.dims, human_bytes(t.size));
            }
        }
    }
    if !layers.is_empty() {
        let _ = writeln!(s, "\nlayers ({}):", layers.len());
        for (i, (bytes, types)) in &layers {
            let mix: Vec<String> = types.iter().map(|(t, n)| format!("{n}×{t}")).collect();
            let _ = writeln!(s, "  blk.{i:<4} {:>12}  {}", human_bytes(*bytes), mix.join(" "));
        }
    }
    if all_tensors {
        let _ = writeln!(s, "\nall tensors:");
        for t in &f.tensors {
            let _ = writeln!(
                s,
                "  {:40} {:>8} {:>22} offset {:>12} {:>12}",
                t.name,
                t.ty.to_string(),
                format!("{:?}", t.dims),
                f.data_offset + t.offset,
                human_bytes(t.size)
            );
        }
    }
    s
}
