//! Which prima build runs where: the `binaries = "DIR"` folder of cluster.toml holds one build
//! per OS and CPU, named `prima-<os>-<arch>[.exe]` after Rust's `std::env::consts` names (the
//! ones an agent reports in its HelloReply), and the head ships each agent the one for its
//! platform. The aarch64 Linux build (static, musl) is also the Termux build: it reports
//! "linux" on Android too.

use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};

/// The file name of the build for `os`/`arch` (`prima-windows-x86_64.exe`).
pub fn file_name(os: &str, arch: &str) -> String {
    let exe = if os == "windows" { ".exe" } else { "" };
    format!("prima-{os}-{arch}{exe}")
}

/// The Rust target that builds a binary for `os`/`arch` (static where the OS allows it).
pub fn target_triple(os: &str, arch: &str) -> String {
    match os {
        "linux" => format!("{arch}-unknown-linux-musl"),
        "macos" => format!("{arch}-apple-darwin"),
        "windows" => format!("{arch}-pc-windows-gnu"),
        "android" => format!("{arch}-linux-android"),
        other => format!("{arch}-<the target for {other}>"),
    }
}

/// The shell command that builds the file for `os`/`arch` into `dir`.
pub fn build_command(dir: &Path, os: &str, arch: &str) -> String {
    let target = target_triple(os, arch);
    let exe = if os == "windows" { ".exe" } else { "" };
    format!(
        "cargo build --release --target {target} && cp target/{target}/release/prima{exe} {}",
        dir.join(file_name(os, arch)).display()
    )
}

/// The build for `os`/`arch` in `dir`: Ok(None) when the file is not there.
pub fn read(dir: &Path, os: &str, arch: &str) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let path = dir.join(file_name(os, arch));
    match std::fs::read(&path) {
        Ok(b) => Ok(Some((path, b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::from(e)).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_commands() {
        assert_eq!(file_name("linux", "aarch64"), "prima-linux-aarch64");
        assert_eq!(file_name("windows", "x86_64"), "prima-windows-x86_64.exe");
        assert_eq!(target_triple("macos", "aarch64"), "aarch64-apple-darwin");
        assert_eq!(
            build_command(Path::new("dist"), "windows", "x86_64"),
            "cargo build --release --target x86_64-pc-windows-gnu && \
             cp target/x86_64-pc-windows-gnu/release/prima.exe dist/prima-windows-x86_64.exe"
        );
    }
}
