//! Device sets to plan for without the hardware: synthetic mixes for the planner benchmark and
//! tests.

use crate::profile::{DeviceProfile, Gpu, KvAppend, Link, Memory, Os, Throughput};

/// `n` synthetic, varied devices (for the planner benchmark and tests) (phones, laptops, desktops with and without GPUs, Macs).
pub fn synthetic_devices(n: usize) -> Vec<DeviceProfile> {
    let gib = |g: f64| (g * (1u64 << 30) as f64) as u64;
    (0..n)
        .map(|i| {
            let kind = i % 4;
            let os = [Os::Linux, Os::MacOs, Os::Android, Os::Linux][kind];
            let mut p = DeviceProfile::new(&format!("dev{i:02}"), os);
            let q4k = [150.0, 60.0, 40.0, 250.0][kind] * (1.0 + (i % 5) as f64 * 0.1);
            p.cores = [8, 8, 8, 16][kind];
            p.cpu = [("f32", 0.6), ("f16", 0.8), ("q4_K", 1.0), ("q6_K", 0.8)]
                .iter()
                .map(|&(f, s)| Throughput { format: f.into(), threads: p.cores, gflops: q4k * s })
                .collect();
            p.ram_read_gbps = [40.0, 60.0, 20.0, 50.0][kind];
            p.kv_append = KvAppend { fixed_us: 2.0, gbps: 10.0 };
            p.disk.seq_gbps = [3.0, 2.5, 1.4, 3.2][kind];
            p.disk.rnd_gbps = [0.4, 0.7, 0.2, 0.5][kind];
            p.memory = Memory {
                total: gib(16.0),
                available: gib([4.1, 2.4, 1.9, 9.7][kind] + (i % 3) as f64),
                ..Memory::default()
            };
            p.link = Some(Link { rtt_ms: 3.0 + (i % 5) as f64, gbps: 0.05 });
            if kind == 0 || kind == 3 || kind == 1 {
                let uma = kind == 1;
                p.gpu = Some(Gpu {
                    name: "gpu".into(),
                    backend: if uma { "metal" } else { "vulkan" }.into(),
                    uma,
                    mem_total: gib(8.0),
                    mem_free: gib([8.0, 5.3, 0.0, 11.0][kind]),
                    read_gbps: [380.0, 60.0, 0.0, 550.0][kind],
                    flops: p.cpu.iter().map(|t| Throughput { gflops: t.gflops * 10.0, ..t.clone() }).collect(),
                    kv_append: KvAppend { fixed_us: 10.0, gbps: 50.0 },
                    upload_ms: 0.05,
                    download_ms: 0.05,
                });
            }
            p
        })
        .collect()
}
