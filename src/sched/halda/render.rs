//! The plan as a table: per device layers, GPU layers, memory use vs budget, predicted ms.

use std::fmt::Write;

use super::{GIB, Plan};

fn gib(b: u64) -> String {
    format!("{:.2}", b as f64 / GIB)
}

/// The plan as a table: per device layers, GPU layers, memory use vs budget, predicted ms.
pub fn render(p: &Plan) -> String {
    let mut s = String::new();
    let active = p.active();
    let windows: Vec<String> = p.devices.iter().map(|d| d.w.to_string()).collect();
    let _ = writeln!(
        s,
        "{}: {} layers, context {} ({} KV), k = {} round{} of windows {}",
        p.model,
        p.n_layer,
        p.n_ctx,
        p.kv_ty,
        p.k,
        if p.k == 1 { "" } else { "s" },
        windows.join(":")
    );
    let _ = writeln!(
        s,
        "{:<12} {:<7} {:>4} {:>6} {:>4} {:>15} {:>15} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "device",
        "os",
        "case",
        "layers",
        "gpu",
        "RAM GiB",
        "VRAM GiB",
        "disk GiB",
        "compute",
        "memory",
        "disk",
        "network",
        "total",
        ""
    );
    for &i in &active {
        let d = &p.devices[i];
        let mut role = String::new();
        if d.is_head {
            role.push_str(if d.output_on_gpu { "head(gpu)" } else { "head" });
        }
        let _ = writeln!(
            s,
            "{:<12} {:<7} {:>4} {:>6} {:>4} {:>15} {:>15} {:>9} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9}",
            d.name,
            d.os.to_string(),
            format!("{:?}", d.case),
            d.layers(p.k),
            d.n * p.k,
            format!("{}/{}", gib(d.ram_need), gib(d.ram_budget)),
            if d.vram_budget > 0 || d.vram_need > 0 {
                format!("{}/{}", gib(d.vram_need), gib(d.vram_budget))
            } else {
                "-".into()
            },
            if d.disk_bytes > 0 { gib(d.disk_bytes) } else { "-".into() },
            d.ms.compute,
            d.ms.memory,
            d.ms.disk,
            d.ms.network,
            d.ms.total(),
            role
        );
    }
    let _ = writeln!(s, "predicted: {:.1} ms/token ({:.2} tokens/s)", p.ms_per_token, 1e3 / p.ms_per_token);
    for d in &p.dropped {
        let _ = writeln!(s, "dropped {}: {}", d.name, d.reason);
    }
    for &i in &active {
        let d = &p.devices[i];
        if d.disk_bytes > 0 {
            let _ = writeln!(
                s,
                "note: {} needs {} GiB but has {} GiB: streams {} GiB per token from disk ({:?})",
                d.name,
                gib(d.ram_need),
                gib(d.ram_budget),
                gib(d.disk_bytes),
                d.case
            );
        }
    }
    for w in &p.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}
