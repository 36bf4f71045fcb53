//! Phase 1 of `prima up`: connect to every agent and authenticate, upgrading those that run
//! another build (the head ships its own binary, or the build for the agent's OS and CPU from
//! the cluster's `binaries` folder).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Progress, dev_label, mb};
use crate::cluster::agent::build_id;
use crate::cluster::auth::{self, Secret};
use crate::cluster::builds;
use crate::cluster::config::DeviceConfig;
use crate::cluster::messages::Msg;
use crate::cluster::transport::{CHUNK, Conn, Timeouts};
use crate::error::{Context, Error, Result};

/// Every agent of `devices` (the head excluded), connected, on our build.
pub(super) fn connect_all(devices: &[DeviceConfig], secret: &Secret, t: Timeouts, p: &Progress) -> Result<Vec<Conn>> {
    devices.iter().map(|d| connect_current(d, secret, t, p)).collect()
}

/// Connect and authenticate, with a clear error naming the device.
pub(super) fn connect(d: &DeviceConfig, secret: &Secret, t: Timeouts) -> Result<(Conn, Msg)> {
    let mut c = Conn::connect(&d.addr, d.name.clone(), t).map_err(|e| {
        Error::msg(format!(
            "{} is unreachable: {e}. Is `prima agent --listen {}` running there, and the port open?",
            dev_label(d),
            d.addr
        ))
    })?;
    auth::client(&mut c, secret, t).map_err(|e| {
        Error::msg(format!("{} refused us: {e} (do both sides use the same secret file?)", dev_label(d)))
    })?;
    pin(&c, d, secret)?;
    c.send(&Msg::Hello)?;
    let hello = c.recv_ok().with_context(|| dev_label(d))?;
    Ok((c, hello))
}

/// The agent's proven key must be the one pinned for this device (pinned now if it is new).
pub(super) fn pin(c: &Conn, d: &DeviceConfig, secret: &Secret) -> Result<()> {
    match (secret.pin_file(), c.remote_key()) {
        (Some(file), Some(key)) => auth::check_pin(file, &d.name, &d.addr, &key),
        (None, _) => Ok(()),
        (_, None) => Err(Error::msg(format!("{}: no key after the handshake", dev_label(d)))),
    }
}

/// Connect, upgrading the agent first if it runs another build.
pub(super) fn connect_current(d: &DeviceConfig, secret: &Secret, t: Timeouts, p: &Progress) -> Result<Conn> {
    let t0 = Instant::now();
    let (mut c, hello) = connect(d, secret, t)?;
    let Msg::HelloReply { version, build_id: theirs, os, arch } = hello else {
        return Err(Error::msg(format!("{}: expected HelloReply, got {}", dev_label(d), hello.name())));
    };
    p.line(format!(
        "connect {}: prima {version} {os}/{arch} ({:.0} ms)",
        dev_label(d),
        t0.elapsed().as_secs_f64() * 1e3
    ));
    if theirs == build_id() {
        return Ok(c);
    }
    let Some((source, bytes)) = build_for(d, &version, &os, &arch, p)? else {
        return Ok(c);
    };
    let want = crate::cluster::sha256::sha256(&bytes);
    if want == theirs {
        return Ok(c);
    }
    let t0 = Instant::now();
    c.send(&Msg::ShipBegin { size: bytes.len() as u64, sha256: want })?;
    for chunk in bytes.chunks(CHUNK) {
        c.send(&Msg::ShipChunk { data: chunk.to_vec() })?;
    }
    c.send(&Msg::ShipEnd)?;
    match c.recv_ok().with_context(|| format!("upgrading {} with {source}", dev_label(d)))? {
        Msg::Restarting => {}
        m => return Err(Error::msg(format!("{}: expected Restarting, got {}", dev_label(d), m.name()))),
    }
    drop(c);
    p.line(format!(
        "ship {}: {:.1} MB {source} in {:.2} s, agent restarting",
        dev_label(d),
        mb(bytes.len() as u64),
        t0.elapsed().as_secs_f64()
    ));
    // The agent re-executes; reconnect once it listens again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(150));
        match connect(d, secret, t) {
            Ok((c, Msg::HelloReply { build_id: b, version: v, .. })) if b == want => {
                if v != env!("CARGO_PKG_VERSION") {
                    return Err(Error::msg(format!(
                        "{} now runs {source}, which is prima {v}; this head is prima {}: put a build of this \
                         version there",
                        dev_label(d),
                        env!("CARGO_PKG_VERSION")
                    )));
                }
                p.line(format!("ship {}: upgraded ({:.2} s)", dev_label(d), t0.elapsed().as_secs_f64()));
                return Ok(c);
            }
            Ok(_) => {
                return Err(Error::msg(format!(
                    "{} still reports another build after the upgrade (is its binary read-only?)",
                    dev_label(d)
                )));
            }
            Err(e) if Instant::now() > deadline => return Err(e.context("after the upgrade")),
            Err(_) => {}
        }
    }
}

/// The build an agent on `os`/`arch` should run, with where it came from: the head's own binary
/// for an agent like the head, else the file for its platform in the `binaries` folder. None when
/// the agent may keep what it runs: another platform, no file for it, but the same version.
fn build_for(d: &DeviceConfig, version: &str, os: &str, arch: &str, p: &Progress) -> Result<Option<(String, Vec<u8>)>> {
    if os == std::env::consts::OS && arch == std::env::consts::ARCH {
        return Ok(Some(("binary".into(), own_binary()?)));
    }
    let ours = env!("CARGO_PKG_VERSION");
    let name = builds::file_name(os, arch);
    if let Some(dir) = &d.binaries {
        if let Some((path, bytes)) = builds::read(dir, os, arch)? {
            return Ok(Some((format!("{}", path.display()), bytes)));
        }
        return Err(Error::msg(format!(
            "{} runs prima {version} on {os}/{arch} and {} has no {name} to send it: build it with `{}`",
            dev_label(d),
            dir.display(),
            builds::build_command(dir, os, arch)
        )));
    }
    if version == ours {
        p.line(format!(
            "connect {}: another build of prima {ours} ({os}/{arch}); `binaries = \"DIR\"` in cluster.toml with \
             DIR/{name} keeps it on this exact build",
            dev_label(d)
        ));
        return Ok(None);
    }
    Err(Error::msg(format!(
        "{} runs prima {version} on {os}/{arch}; this head is prima {ours} on {}/{}: set `binaries = \"DIR\"` in \
         cluster.toml and put DIR/{name} there, built with `{}`",
        dev_label(d),
        std::env::consts::OS,
        std::env::consts::ARCH,
        builds::build_command(Path::new("DIR"), os, arch)
    )))
}

/// This program's bytes. On Linux through /proc/self/exe, which stays readable even when an
/// agent sharing our path (devices on one machine) has already replaced the file.
fn own_binary() -> Result<Vec<u8>> {
    if let Ok(b) = std::fs::read("/proc/self/exe") {
        return Ok(b);
    }
    let exe = std::env::current_exe().context("finding our own executable")?;
    std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))
}
