//! `cluster.toml`: which model, which secret, which devices in which ring order, and the knobs.
//! See `cluster.example.toml` at the top of the repository for the documented format.
//!
//! Every mistake is reported with the file name, the line, and what to write instead.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::transport::Timeouts;
use crate::error::{Context, Error, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    model: Spanned<String>,
    secret_file: Spanned<String>,
    rounds: Option<Spanned<u32>>,
    schedule: Option<Spanned<String>>,
    ctx_size: Option<Spanned<u32>>,
    batch_size: Option<Spanned<u32>>,
    timeout_secs: Option<Spanned<f64>>,
    binaries: Option<Spanned<String>>,
    #[serde(default)]
    generate: Generate,
    #[serde(default)]
    serve: ServeTable,
    #[serde(default)]
    device: Vec<RawDevice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: Spanned<String>,
    addr: Spanned<String>,
    window: Option<Spanned<u32>>,
    gpu_layers: Option<u32>,
    gpu_memory: Option<Spanned<String>>,
    threads: Option<Spanned<u32>>,
}

/// How layers are split when no device has a manual `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// The Halda plan over every device's measured profile; may drop devices.
    Halda,
    /// Equal windows on every device (demos and tests of the ring itself).
    Even,
}

/// Generation defaults (`[generate]`), overridable on the command line.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Generate {
    /// Tokens to generate per prompt.
    pub n_predict: u32,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Generate {
    fn default() -> Self {
        Generate { n_predict: 256, temperature: 0.8, top_k: 40, top_p: 0.95, seed: 0 }
    }
}

/// `[serve]` (for `prima up --serve`): where to listen, the API key file, sequences at once.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeTable {
    /// host:port; None: `--serve ADDR` must give it.
    pub listen: Option<String>,
    /// Resolved against the toml file's directory.
    pub api_key_file: Option<PathBuf>,
    pub parallel: u32,
}

impl Default for ServeTable {
    fn default() -> Self {
        ServeTable { listen: None, api_key_file: None, parallel: 4 }
    }
}

impl ServeTable {
    fn checked(mut self, file: &str, dir: &Path) -> Result<ServeTable> {
        if self.parallel == 0 || self.parallel > 256 {
            return Err(Error::msg(format!("{file}: [serve] parallel = {}; use 1 to 256 sequences", self.parallel)));
        }
        if let Some(l) = &self.listen
            && l.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(Error::msg(format!(
                "{file}: [serve] listen = \"{l}\" is not host:port, e.g. \"127.0.0.1:8080\""
            )));
        }
        self.api_key_file = self.api_key_file.map(|f| dir.join(f));
        Ok(self)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeviceConfig {
    pub name: String,
    pub addr: String,
    /// Layers per round, when set by hand.
    pub window: Option<u32>,
    pub gpu_layers: Option<u32>,
    /// GPU memory to plan with (`gpu_memory = "6GiB"`), bytes.
    pub gpu_memory: Option<u64>,
    pub threads: Option<u32>,
    /// Line of this device's `name` in the file (for later error messages).
    pub line: usize,
    /// The cluster's `binaries` directory (the same for every device, kept here so that
    /// connecting to and upgrading one device needs only its own entry).
    pub binaries: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub path: PathBuf,
    /// Resolved against the toml file's directory.
    pub model: PathBuf,
    pub secret_file: PathBuf,
    pub rounds: Option<u32>,
    pub schedule: Schedule,
    pub ctx_size: u32,
    /// Prompt tokens per ring pass during prefill.
    pub batch_size: u32,
    pub timeouts: Timeouts,
    pub generate: Generate,
    /// `[serve]`: what `prima up --serve` uses unless the command line says otherwise.
    pub serve: ServeTable,
    /// Ring order; the first is the head.
    pub devices: Vec<DeviceConfig>,
    rounds_line: Option<usize>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

impl ClusterConfig {
    pub fn load(path: impl AsRef<Path>) -> Result<ClusterConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parse `text` as if read from `path` (relative paths resolve against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<ClusterConfig> {
        let file = path.display();
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| format!(" line {}", line_of(text, s.start))).unwrap_or_default();
            let mut msg = e.message().to_string();
            if msg.contains("unknown field") {
                msg.push_str(" (see cluster.example.toml for every key)");
            }
            Error::msg(format!("{file}{line}: {msg}"))
        })?;
        let at = |span: Range<usize>| format!("{file} line {}", line_of(text, span.start));
        let dir = path.parent().unwrap_or(Path::new("."));

        if raw.model.get_ref().is_empty() {
            return Err(Error::msg(format!(
                "{}: `model` is empty; give the path of a .gguf file",
                at(raw.model.span())
            )));
        }
        if raw.device.is_empty() {
            return Err(Error::msg(format!(
                "{file}: no devices; add at least one `[[device]]` with `name` and `addr` (the first one is the head)"
            )));
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut addrs: HashMap<String, usize> = HashMap::new();
        let mut devices = Vec::new();
        for d in &raw.device {
            let line = line_of(text, d.name.span().start);
            let name = d.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(Error::msg(format!("{}: empty device name; name every device", at(d.name.span()))));
            }
            if let Some(first) = names.insert(name.clone(), line) {
                return Err(Error::msg(format!(
                    "{}: device name `{name}` is already used on line {first}; give every device its own name",
                    at(d.name.span())
                )));
            }
            let addr = d.addr.get_ref().trim().to_string();
            let Some((host, port)) = addr.rsplit_once(':') else {
                return Err(Error::msg(format!(
                    "{}: address `{addr}` has no port; write it as host:port, e.g. \"192.168.1.20:7700\"",
                    at(d.addr.span())
                )));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(Error::msg(format!(
                    "{}: address `{addr}` is not host:port with a port number below 65536, e.g. \"192.168.1.20:7700\"",
                    at(d.addr.span())
                )));
            }
            if let Some(first) = addrs.insert(addr.clone(), line_of(text, d.addr.span().start)) {
                return Err(Error::msg(format!(
                    "{}: address `{addr}` is already used on line {first}; every agent needs its own host:port",
                    at(d.addr.span())
                )));
            }
            if let Some(t) = &d.threads
                && !(1..=1024).contains(t.get_ref())
            {
                return Err(Error::msg(format!(
                    "{}: threads = {}; use 1 to 1024 (or leave it out)",
                    at(t.span()),
                    t.get_ref()
                )));
            }
            let gpu_memory = match &d.gpu_memory {
                Some(m) => Some(
                    crate::profile::parse_memory_size(m.get_ref())
                        .map_err(|e| Error::msg(format!("{}: gpu_memory: {e}", at(m.span()))))?,
                ),
                None => None,
            };
            devices.push(DeviceConfig {
                name,
                addr,
                window: d.window.as_ref().map(|w| *w.get_ref()),
                gpu_layers: d.gpu_layers,
                gpu_memory,
                threads: d.threads.as_ref().map(|t| *t.get_ref()),
                line,
                binaries: None,
            });
        }
        let with_window = devices.iter().filter(|d| d.window.is_some()).count();
        if with_window != 0 && with_window != devices.len() {
            let missing = devices.iter().find(|d| d.window.is_none()).expect("one lacks a window");
            return Err(Error::msg(format!(
                "{file} line {}: device `{}` has no `window` but others do; set `window` on every device or on none",
                missing.line, missing.name
            )));
        }
        if let Some(r) = &raw.rounds
            && *r.get_ref() == 0
        {
            return Err(Error::msg(format!("{}: rounds = 0; use 1 or more (or leave it out)", at(r.span()))));
        }
        let schedule = match raw.schedule.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("halda", _)) => Schedule::Halda,
            Some(("even", _)) => Schedule::Even,
            Some((other, span)) => {
                return Err(Error::msg(format!(
                    "{}: schedule = \"{other}\"; use \"halda\" (plan from device profiles) or \"even\" (equal windows)",
                    at(span)
                )));
            }
        };
        let ctx_size = raw.ctx_size.as_ref().map(|c| *c.get_ref()).unwrap_or(4096);
        if let Some(c) = &raw.ctx_size
            && !(16..=1 << 24).contains(c.get_ref())
        {
            return Err(Error::msg(format!("{}: ctx_size = {}; use 16 to {}", at(c.span()), c.get_ref(), 1 << 24)));
        }
        let batch_size = raw.batch_size.as_ref().map(|c| *c.get_ref()).unwrap_or(64);
        if let Some(b) = &raw.batch_size
            && !(1..=4096).contains(b.get_ref())
        {
            return Err(Error::msg(format!("{}: batch_size = {}; use 1 to 4096", at(b.span()), b.get_ref())));
        }
        if let Some(b) = &raw.binaries {
            let d = dir.join(b.get_ref());
            if !d.is_dir() {
                return Err(Error::msg(format!(
                    "{}: binaries = \"{}\": {} is not a directory; give the folder that holds the \
                     prima-<os>-<arch> builds (relative to this file)",
                    at(b.span()),
                    b.get_ref(),
                    d.display()
                )));
            }
            for dev in &mut devices {
                dev.binaries = Some(d.clone());
            }
        }
        let mut timeouts = Timeouts::default();
        if let Some(t) = &raw.timeout_secs {
            let v = *t.get_ref();
            if !(0.5..=3600.0).contains(&v) {
                return Err(Error::msg(format!(
                    "{}: timeout_secs = {v}; use a number of seconds between 0.5 and 3600",
                    at(t.span())
                )));
            }
            timeouts.io = Duration::from_secs_f64(v);
            timeouts.heartbeat = Duration::from_secs_f64(v / 5.0);
        }
        Ok(ClusterConfig {
            path: path.to_path_buf(),
            model: dir.join(raw.model.get_ref()),
            secret_file: dir.join(raw.secret_file.get_ref()),
            rounds: raw.rounds.as_ref().map(|r| *r.get_ref()),
            schedule,
            ctx_size,
            batch_size,
            timeouts,
            generate: raw.generate,
            serve: raw.serve.checked(&file.to_string(), dir)?,
            devices,
            rounds_line: raw.rounds.as_ref().map(|r| line_of(text, r.span().start)),
        })
    }

    /// The layer split, once the model's layer count is known: manual windows, else even windows.
    pub fn plan(&self, n_layer: usize) -> Result<LayerSplit> {
        let file = self.path.display();
        let n = self.devices.len();
        let rounds_at = self.rounds_line.map(|l| format!(" line {l}")).unwrap_or_default();
        if self.devices.iter().all(|d| d.window.is_some()) {
            let w: Vec<usize> = self.devices.iter().map(|d| d.window.unwrap_or(0) as usize).collect();
            let per_round: usize = w.iter().sum();
            if per_round == 0 {
                return Err(Error::msg(format!("{file}: every window is 0; give the devices layers")));
            }
            let k = match self.rounds {
                Some(k) => k as usize,
                None if n_layer.is_multiple_of(per_round) => n_layer / per_round,
                None => 0,
            };
            if per_round * k != n_layer {
                return Err(Error::msg(format!(
                    "{file}: the windows sum to {per_round} layers per round{}, but the model has {n_layer} layers; \
                     make the windows sum to {} (= {n_layer} layers ÷ {} rounds)",
                    if k > 0 { format!(" × {k} rounds = {}", per_round * k) } else { String::new() },
                    if k > 0 && n_layer.is_multiple_of(k) {
                        (n_layer / k).to_string()
                    } else {
                        "a divisor of the layer count".into()
                    },
                    k.max(1),
                )));
            }
            return Ok(LayerSplit { rounds: k, windows: w });
        }
        let k = self.rounds.unwrap_or(1) as usize;
        if !n_layer.is_multiple_of(k) {
            let divisors: Vec<String> =
                (1..=n_layer).filter(|d| n_layer.is_multiple_of(*d)).map(|d| d.to_string()).collect();
            return Err(Error::msg(format!(
                "{file}{rounds_at}: rounds = {k} does not divide the model's {n_layer} layers; use one of {}",
                divisors.join(", ")
            )));
        }
        let per_round = n_layer / k;
        if per_round < n {
            return Err(Error::msg(format!(
                "{file}{rounds_at}: {per_round} layers per round cannot be spread over {n} devices; use fewer rounds or devices"
            )));
        }
        // Even split; the remainder goes to the workers first (the head also runs the output).
        let mut w = vec![per_round / n; n];
        for i in 0..per_round % n {
            w[1 + i % (n - 1).max(1)] += 1;
        }
        Ok(LayerSplit { rounds: k, windows: w })
    }
}

/// Layers per round for each device, and the number of rounds k.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSplit {
    pub rounds: usize,
    pub windows: Vec<usize>,
}

impl DeviceConfig {
    /// The configured `gpu_memory` in place of what the profile could tell.
    pub fn cap_gpu_memory(&self, p: &mut crate::profile::DeviceProfile) {
        if let (Some(cap), Some(g)) = (self.gpu_memory, p.gpu.as_mut()) {
            g.mem_total = cap;
            g.mem_free = cap;
        }
    }
}

impl LayerSplit {
    pub fn per_round(&self) -> usize {
        self.windows.iter().sum()
    }

    pub fn n_layer(&self) -> usize {
        self.per_round() * self.rounds
    }

    /// Device `m`'s layer ranges, one per round. Within a round the windows run in ring order
    /// 1, 2, …, N−1 and then the head (device 0), so the head owns the last layer of each round.
    pub fn ranges(&self, m: usize) -> Vec<Range<usize>> {
        let n = self.windows.len();
        let mut off = 0;
        for d in (1..n).chain(std::iter::once(0)) {
            if d == m {
                break;
            }
            off += self.windows[d];
        }
        let w = self.per_round();
        (0..self.rounds).map(|r| r * w + off..r * w + off + self.windows[m]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClusterConfig> {
        ClusterConfig::parse(s, Path::new("/etc/prima/cluster.toml"))
    }

    const BASE: &str = r#"
model = "models/m.gguf"
secret_file = "cluster.secret"

[[device]]
name = "desktop"
addr = "127.0.0.1:7700"

[[device]]
name = "laptop"
addr = "127.0.0.1:7701"
"#;

    #[test]
    fn example_file_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.example.toml");
        let c = ClusterConfig::load(&p).unwrap();
        assert_eq!(c.devices.len(), 3);
        assert_eq!(c.devices[2].addr, "127.0.0.1:7702");
    }

    #[test]
    fn binaries_folder_resolves_against_the_file_and_must_exist() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let c = ClusterConfig::parse(&format!("binaries = \"src\"\n{BASE}"), &dir.join("cluster.toml")).unwrap();
        assert!(c.devices.iter().all(|d| d.binaries.as_deref() == Some(dir.join("src").as_path())));
        assert_eq!(parse(BASE).unwrap().devices[0].binaries, None);
        let e = parse(&format!("binaries = \"dist\"\n{BASE}")).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("/etc/prima/dist is not a directory"), "{e}");
    }

    #[test]
    fn paths_resolve_against_the_file() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.model, Path::new("/etc/prima/models/m.gguf"));
        assert_eq!(c.secret_file, Path::new("/etc/prima/cluster.secret"));
        assert_eq!(c.devices[1].line, 10);
        assert_eq!(c.ctx_size, 4096);
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e = parse(&BASE.replace("addr = \"127.0.0.1:7700\"", "adr = \"127.0.0.1:7700\"")).unwrap_err().to_string();
        assert!(e.contains("line 7") && e.contains("unknown field"), "{e}");
        let e = parse(&BASE.replace("7701", "7700")).unwrap_err().to_string();
        assert!(e.contains("line 11") && e.contains("already used on line 7"), "{e}");
        let e = parse(&BASE.replace("\"laptop\"", "\"desktop\"")).unwrap_err().to_string();
        assert!(e.contains("line 10") && e.contains("own name"), "{e}");
        let e = parse(&BASE.replace("127.0.0.1:7701", "127.0.0.1")).unwrap_err().to_string();
        assert!(e.contains("line 11") && e.contains("host:port"), "{e}");
        let e = parse(&format!("rounds = \"two\"\n{BASE}")).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = parse(&format!("{BASE}window = 3\n")).unwrap_err().to_string();
        assert!(e.contains("`desktop` has no `window`") && e.contains("line 6"), "{e}");
    }

    #[test]
    fn manual_windows_must_sum_to_layers_over_rounds() {
        let c = parse(
            &format!("rounds = 2\n{BASE}")
                .replace("7700\"", "7700\"\nwindow = 1")
                .replace("7701\"", "7701\"\nwindow = 3"),
        )
        .unwrap();
        assert_eq!(c.plan(8).unwrap(), LayerSplit { rounds: 2, windows: vec![1, 3] });
        let e = c.plan(10).unwrap_err().to_string();
        assert!(e.contains("sum to 4") && e.contains("make the windows sum to 5"), "{e}");
        // Without rounds, k is inferred.
        let c = parse(&BASE.replace("7700\"", "7700\"\nwindow = 1").replace("7701\"", "7701\"\nwindow = 3")).unwrap();
        assert_eq!(c.plan(12).unwrap().rounds, 3);
        assert!(c.plan(10).is_err());
    }

    #[test]
    fn even_split_and_ranges() {
        let c = parse(&format!("rounds = 2\n{BASE}")).unwrap();
        let p = c.plan(10).unwrap();
        assert_eq!(p.windows, vec![2, 3]);
        // Round order: laptop (1) then desktop (0).
        assert_eq!(p.ranges(1), vec![0..3, 5..8]);
        assert_eq!(p.ranges(0), vec![3..5, 8..10]);
        assert!(c.plan(9).unwrap_err().to_string().contains("use one of 1, 3, 9"));
        // The reference example: L = 32, w = (2, 3, 2, 1): head owns 6, 7, 14, 15, ...
        let p = LayerSplit { rounds: 4, windows: vec![2, 3, 2, 1] };
        assert_eq!(p.ranges(0), vec![6..8, 14..16, 22..24, 30..32]);
        assert_eq!(p.ranges(1), vec![0..3, 8..11, 16..19, 24..27]);
        assert_eq!(p.ranges(3), vec![5..6, 13..14, 21..22, 29..30]);
    }

    #[test]
    fn serve_table_is_read_and_checked() {
        assert_eq!(parse(BASE).unwrap().serve, ServeTable::default());
        let c = parse(&format!("{BASE}\n[serve]\nlisten = \"0.0.0.0:9000\"\napi_key_file = \"k.txt\"\nparallel = 2\n"))
            .unwrap();
        assert_eq!(c.serve.listen.as_deref(), Some("0.0.0.0:9000"));
        assert_eq!(c.serve.api_key_file, Some(PathBuf::from("/etc/prima/k.txt")));
        assert_eq!(c.serve.parallel, 2);
        let e = parse(&format!("{BASE}\n[serve]\nparallel = 0\n")).unwrap_err().to_string();
        assert!(e.contains("parallel = 0"), "{e}");
        let e = parse(&format!("{BASE}\n[serve]\nlisten = \"8080\"\n")).unwrap_err().to_string();
        assert!(e.contains("host:port"), "{e}");
        assert!(parse(&format!("{BASE}\n[serve]\nport = 1\n")).is_err());
    }
}
