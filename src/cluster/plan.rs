//! Layer assignment: manual windows from cluster.toml, or the Halda plan over device profiles
//! (each device measures itself once; the profile is cached next to its layers and its
//! memory figures refreshed on every run).

use std::path::Path;

use super::config::Plan;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::profile::DeviceProfile;
use crate::profile::measure::{Options, measure};
use crate::quant::GgmlType;
use crate::sched::{ModelCost, halda};

/// This device's profile: measured once into `dir/profile.postcard`, memory re-read each time.
pub fn local_profile(dir: &Path, log: &mut dyn FnMut(&str)) -> Result<DeviceProfile> {
    let path = dir.join("profile.postcard");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(mut p) = DeviceProfile::from_postcard(&bytes)
    {
        p.memory = crate::profile::sys::memory(p.os);
        return Ok(p);
    }
    std::fs::create_dir_all(dir)?;
    log("measuring this device (once; cached for later runs)");
    let opt = Options { disk_dir: dir.to_path_buf(), disk_file_mib: 64, ram_buffer_mib: 64, ..Options::default() };
    let p = measure(&opt, log)?;
    let _ = std::fs::write(&path, p.to_postcard()?);
    Ok(p)
}

/// The Halda plan for these devices (device 0 is the head and is never dropped). Devices the
/// plan drops get a window of 0; the caller leaves them out of the ring.
pub fn halda_plan(f: &GgufFile, profiles: &[DeviceProfile], n_ctx: u32, rounds: Option<u32>) -> Result<(Plan, String)> {
    let cost = ModelCost::from_gguf(f)?;
    let opt = halda::Options {
        n_ctx: n_ctx as u64,
        kv_ty: GgmlType::F32,
        head: Some(0),
        k: rounds,
        ..halda::Options::default()
    };
    let p = halda::plan(profiles, &cost, &opt)?;
    let windows: Vec<usize> = p.windows().iter().map(|&w| w as usize).collect();
    if windows.iter().sum::<usize>() * p.k as usize
        != f.require_u64(&format!("{}.block_count", f.architecture().unwrap_or("llama")))? as usize
    {
        return Err(Error::msg("the plan does not cover every layer"));
    }
    Ok((Plan { rounds: p.k as usize, windows }, crate::sched::render(&p)))
}
