//! Who may talk to whom: a Noise `XXpsk3` handshake on every connection.
//!
//! ```text
//! head (initiator)                          agent (responder)
//!  PREFACE, -> e                      ───►
//!                                     ◄───   <- e, ee, s, es          (agent's static key)
//!  -> s, se, psk                      ───►                            (head's key; the secret)
//!                                     ◄───   AuthOk, the first sealed frame
//! ```
//! Each device has a static X25519 key (an agent keeps its own in its cache directory and prints
//! its fingerprint; a head makes a fresh one per run); the cluster secret is the pre-shared key
//! mixed in at the last message, so only holders of the secret finish the handshake, and the
//! secret itself never travels. The head pins each agent's key on first use
//! ([`check_pin`]) and refuses a changed one. Every frame after the handshake is sealed
//! ([`super::record`]). Each handshake message has a fixed size, read under one absolute
//! deadline: before `AuthOk` nothing else is parsed, no heartbeat accepted, no text logged.
//!
//! The frozen bootstrap (what any two prima versions from protocol 3 on share, so that a newer
//! head can always upgrade an agent): [`PREFACE`], [`NOISE`] with the empty prologue and
//! payloads, the record layer, and the first ten [`Msg`] variants.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::messages::Msg;
use super::sha256::{Sha256, hex, sha256};
use super::transport::{Conn, Timeouts};
use crate::error::{Context, Error, Result};

/// The Noise protocol of every link.
pub const NOISE: &str = "Noise_XXpsk3_25519_ChaChaPoly_SHA256";
/// First bytes from the connecting side: names the handshake, so that anything else (a stranger,
/// a prima from before protocol 3) is turned away on its first bytes.
pub const PREFACE: &[u8; 8] = b"prima\x00N3";
/// The whole handshake, from the first byte to `AuthOk`, must fit in this.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Sizes of the three handshake messages of XXpsk3 with X25519 and empty payloads (with a PSK
/// every payload, even message 1's, carries a tag).
const MSG1: usize = 32 + 16;
const MSG2: usize = 32 + 48 + 16;
const MSG3: usize = 48 + 16;

/// A device's static key pair.
pub struct StaticKey {
    private: Vec<u8>,
    public: [u8; 32],
}

impl StaticKey {
    pub fn generate() -> Result<StaticKey> {
        let k = builder().generate_keypair().map_err(|e| Error::msg(format!("generating a key: {e}")))?;
        let public = k.public.as_slice().try_into().map_err(|_| Error::msg("X25519 public key of odd size"))?;
        Ok(StaticKey { private: k.private, public })
    }

    /// Load the key in `path`, or create it there (mode 0600, never overwritten).
    pub fn load_or_create(path: &Path) -> Result<StaticKey> {
        match std::fs::read(path) {
            Ok(b) if b.len() == 64 => {
                let public = b[32..].try_into().expect("32 bytes");
                Ok(StaticKey { private: b[..32].to_vec(), public })
            }
            Ok(b) => Err(Error::msg(format!(
                "{}: a key file of {} bytes (expected 64); move it away and restart to make a new key",
                path.display(),
                b.len()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = StaticKey::generate()?;
                let mut f = crate::sys::with_mode(std::fs::OpenOptions::new().write(true).create_new(true), 0o600)
                    .open(path)
                    .with_context(|| format!("creating the key file {}", path.display()))?;
                f.write_all(&k.private).and_then(|_| f.write_all(&k.public)).and_then(|_| f.sync_all())?;
                Ok(k)
            }
            Err(e) => Err(Error::from(e).context(format!("reading the key file {}", path.display()))),
        }
    }

    pub fn public(&self) -> [u8; 32] {
        self.public
    }
}

/// The short form of a public key people compare by eye: the first 16 bytes of its sha256.
pub fn fingerprint(public: &[u8; 32]) -> String {
    let h = hex(&sha256(public)[..16]);
    h.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).expect("hex")).collect::<Vec<_>>().join(":")
}

/// The cluster secret (as the Noise pre-shared key) and this device's static key.
#[derive(Clone)]
pub struct Secret {
    psk: [u8; 32],
    key: Arc<StaticKey>,
    /// Where a head pins agents' keys: beside the secret file they were learned under.
    pins: Option<PathBuf>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The secret from a file (surrounding whitespace ignored), with a fresh key of this process.
    pub fn load(path: &Path) -> Result<Secret> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "reading the secret file {} (create one on the head with e.g. `head -c 32 /dev/urandom | base64 > {}` and copy it to every device)",
                path.display(),
                path.display()
            )
        })?;
        let mut s = Secret::from_bytes(bytes.trim_ascii()).with_context(|| path.display())?;
        let mut pins = path.as_os_str().to_owned();
        pins.push(".known-devices");
        s.pins = Some(pins.into());
        Ok(s)
    }

    pub fn from_bytes(b: &[u8]) -> Result<Secret> {
        if b.len() < 16 {
            return Err(Error::msg(format!(
                "the secret is {} bytes long; use at least 16 random bytes (e.g. `head -c 32 /dev/urandom | base64`)",
                b.len()
            )));
        }
        let mut h = Sha256::new();
        h.update(b"prima cluster psk v1\0");
        h.update(b);
        Ok(Secret { psk: h.finish(), key: Arc::new(StaticKey::generate()?), pins: None })
    }

    /// The same secret with this device's long-lived key.
    pub fn with_key(self, key: StaticKey) -> Secret {
        Secret { key: Arc::new(key), ..self }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.public
    }

    /// The file where a head pins agents' keys (None for a secret not read from a file).
    pub fn pin_file(&self) -> Option<&Path> {
        self.pins.as_deref()
    }
}

/// 32 fresh random bytes from the OS.
pub fn nonce() -> Result<[u8; 32]> {
    let mut n = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut n)).context("reading /dev/urandom")?;
    Ok(n)
}

fn builder() -> snow::Builder<'static> {
    snow::Builder::new(NOISE.parse().expect("a valid Noise pattern name"))
}

fn noise_err(conn: &Conn, what: &str, e: snow::Error) -> Error {
    Error::msg(format!("{}: handshake failed at {what} ({e})", conn.peer()))
}

fn read_exact(conn: &mut Conn, n: usize, deadline: Instant) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    conn.read_raw(&mut b, deadline)?;
    Ok(b)
}

fn finish(conn: &mut Conn, hs: snow::HandshakeState, t: Timeouts) -> Result<()> {
    let remote: [u8; 32] = hs
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Error::msg(format!("{}: handshake without the peer's key", conn.peer())))?;
    let session = hs.into_stateless_transport_mode().map_err(|e| noise_err(conn, "the split", e))?;
    conn.secure(session, remote);
    conn.authenticated(t);
    Ok(())
}

/// The handshake state of the connecting side.
pub fn initiator(secret: &Secret) -> std::result::Result<snow::HandshakeState, snow::Error> {
    builder().local_private_key(&secret.key.private)?.psk(3, &secret.psk)?.build_initiator()
}

/// The handshake state of the accepting side.
pub fn responder(secret: &Secret) -> std::result::Result<snow::HandshakeState, snow::Error> {
    builder().local_private_key(&secret.key.private)?.psk(3, &secret.psk)?.build_responder()
}

/// Both ends of a session, handshaken in memory (tests and fuzzing of the record layer).
pub fn in_memory_pair(secret: &Secret) -> Result<(super::record::Session, super::record::Session)> {
    let e = |e: snow::Error| Error::msg(format!("in-memory handshake: {e}"));
    let (mut i, mut r) = (initiator(secret).map_err(e)?, responder(secret).map_err(e)?);
    let (mut a, mut b) = ([0u8; 256], [0u8; 256]);
    for step in 0..3 {
        let (w, rd) = if step == 1 { (&mut r, &mut i) } else { (&mut i, &mut r) };
        let n = w.write_message(&[], &mut a).map_err(e)?;
        rd.read_message(&a[..n], &mut b).map_err(e)?;
    }
    Ok((
        Arc::new(i.into_stateless_transport_mode().map_err(e)?),
        Arc::new(r.into_stateless_transport_mode().map_err(e)?),
    ))
}

/// The connecting side (head, or a worker opening a ring link). Afterwards `conn.remote_key()`
/// is the agent's proven key: check it against what you expect ([`check_pin`]).
pub fn client(conn: &mut Conn, secret: &Secret, t: Timeouts) -> Result<()> {
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    let mut hs = initiator(secret).map_err(|e| noise_err(conn, "setup", e))?;
    let mut out = [0u8; 256];
    let mut m = PREFACE.to_vec();
    let n = hs.write_message(&[], &mut out).map_err(|e| noise_err(conn, "message 1", e))?;
    m.extend_from_slice(&out[..n]);
    conn.write_raw(&m)?;
    let m2 = read_exact(conn, MSG2, deadline).map_err(|e| {
        e.context("the agent hung up in the handshake (an agent of protocol 2 or older must be updated by hand)")
    })?;
    hs.read_message(&m2, &mut out).map_err(|e| noise_err(conn, "message 2", e))?;
    let n = hs.write_message(&[], &mut out).map_err(|e| noise_err(conn, "message 3", e))?;
    conn.write_raw(&out[..n])?;
    finish(conn, hs, t)?;
    conn.rx.set_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
    let r = match conn.recv() {
        Ok(Msg::AuthOk) => Ok(()),
        Ok(m) => Err(Error::msg(format!("{}: expected AuthOk, got {}", conn.peer(), m.name()))),
        Err(e) => Err(Error::msg(format!(
            "{}: the agent does not know our secret (different secret files on the two devices?): {e}",
            conn.peer()
        ))),
    };
    conn.rx.set_timeout(t.io);
    r
}

/// The accepting side (an agent). On failure the caller drops the connection; nothing the peer
/// sent is echoed into the error.
pub fn server(conn: &mut Conn, secret: &Secret, t: Timeouts) -> Result<()> {
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    let mut hs = responder(secret).map_err(|e| noise_err(conn, "setup", e))?;
    // Byte by byte: whatever is not our preface is turned away at its first wrong byte.
    for &want in PREFACE {
        if read_exact(conn, 1, deadline)?[0] != want {
            return Err(Error::msg(
                "rejected: not a prima handshake (a stranger, or a head of protocol 2 or older: update it to this version)",
            ));
        }
    }
    let m1 = read_exact(conn, MSG1, deadline)?;
    let mut out = [0u8; 256];
    hs.read_message(&m1, &mut out).map_err(|e| noise_err(conn, "message 1", e))?;
    let n = hs.write_message(&[], &mut out).map_err(|e| noise_err(conn, "message 2", e))?;
    conn.write_raw(&out[..n])?;
    let m3 = read_exact(conn, MSG3, deadline)?;
    if hs.read_message(&m3, &mut out).is_err() {
        return Err(Error::msg("wrong secret (the peer's handshake does not carry our cluster secret)"));
    }
    finish(conn, hs, t)?;
    conn.rx.set_timeout(t.io);
    conn.send(&Msg::AuthOk)
}

/// A head's trust on first use: the first key seen for device `name` is written to `file`;
/// later a different key is refused with what to do about it.
pub fn check_pin(file: &Path, name: &str, addr: &str, key: &[u8; 32]) -> Result<()> {
    let want = hex(key);
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::from(e).context(format!("reading pinned keys {}", file.display()))),
    };
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(n), Some(k)) = (it.next(), it.next())
            && n == name
        {
            if k == want {
                return Ok(());
            }
            let pinned: Option<[u8; 32]> = (0..32)
                .map(|i| k.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.try_into().ok());
            return Err(Error::msg(format!(
                "device `{name}` ({addr}) presented key {} but {} was pinned for it in {}: someone may be \
                 impersonating it. If that device was reinstalled or its agent's cache directory (agent.key) was \
                 replaced, accept the new key with: sed -i '/^{name} /d' {}",
                fingerprint(key),
                pinned.map(|p| fingerprint(&p)).unwrap_or_else(|| "an unreadable key".into()),
                file.display(),
                file.display()
            )));
        }
    }
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(Error::msg(format!("device name `{name}` cannot be pinned (empty or with spaces)")));
    }
    let mut f = crate::sys::with_mode(std::fs::OpenOptions::new().create(true).append(true), 0o600)
        .open(file)
        .with_context(|| format!("pinning keys in {}", file.display()))?;
    if text.is_empty() {
        writeln!(f, "# prima: agents' static keys, pinned on first use (name key)")?;
    }
    writeln!(f, "{name} {want}")?;
    f.sync_all()?;
    eprintln!("up: pinned the key of device `{name}` ({addr}): {} (in {})", fingerprint(key), file.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(head: &[u8], agent: &[u8]) -> (Result<()>, Result<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = Timeouts::default();
        let a = Secret::from_bytes(agent).unwrap();
        let srv = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut c = Conn::new(s, "head", t).unwrap();
            let r = server(&mut c, &a, t);
            if r.is_ok() {
                // Echo one message: the sealed link works both ways.
                let m = c.recv().unwrap();
                c.send(&m).unwrap();
            }
            r
        });
        let mut c = Conn::connect(&addr, "agent", t).unwrap();
        let r = client(&mut c, &Secret::from_bytes(head).unwrap(), t);
        if r.is_ok() {
            c.send(&Msg::Hello).unwrap();
            assert_eq!(c.recv().unwrap(), Msg::Hello);
        }
        drop(c);
        (r, srv.join().unwrap())
    }

    #[test]
    fn same_secret_passes_wrong_secret_fails_both_ways() {
        let (h, a) = pair(b"0123456789abcdef-one", b"0123456789abcdef-one");
        assert!(h.is_ok() && a.is_ok(), "{h:?} {a:?}");
        let (h, a) = pair(b"0123456789abcdef-one", b"0123456789abcdef-two");
        assert!(h.unwrap_err().to_string().contains("does not know our secret"));
        assert!(a.unwrap_err().to_string().contains("wrong secret"));
    }

    #[test]
    fn short_secret_rejected() {
        assert!(Secret::from_bytes(b"short").is_err());
    }

    #[test]
    fn keys_persist_and_pins_refuse_a_changed_key() {
        let dir = std::env::temp_dir().join(format!("prima-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let kf = dir.join("agent.key");
        let a = StaticKey::load_or_create(&kf).unwrap();
        assert_eq!(StaticKey::load_or_create(&kf).unwrap().public(), a.public());
        let pins = dir.join("pins");
        check_pin(&pins, "w", "x:1", &a.public()).unwrap();
        check_pin(&pins, "w", "x:1", &a.public()).unwrap();
        let b = StaticKey::generate().unwrap();
        let e = check_pin(&pins, "w", "x:1", &b.public()).unwrap_err().to_string();
        assert!(e.contains("was pinned") && e.contains("sed -i '/^w /d'"), "{e}");
        check_pin(&pins, "v", "x:2", &b.public()).unwrap();
        assert_eq!(fingerprint(&a.public()).len(), 39);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
