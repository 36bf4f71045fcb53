//! Mutual challenge–response authentication with a shared secret (HMAC-SHA256, fresh nonces).
//!
//! ```text
//! head                                   agent
//!  AuthInit{nc}                  ───►
//!                                ◄───    AuthChallenge{ns, HMAC(K, "prima-agent" ‖ nc ‖ ns)}
//!  (checks the agent's MAC)
//!  AuthResponse{HMAC(K, "prima-head" ‖ ns ‖ nc)} ───►
//!                                ◄───    AuthOk           (or Error + close, and a log line)
//! ```
//! The secret never travels; each side proves knowledge of it over a nonce chosen by the other,
//! and the two MACs are domain-separated so one side's answer can never be replayed as the
//! other's. Nothing but these four messages is accepted before `AuthOk`.
//! (The connection is authenticated, not encrypted: run it on a trusted LAN or a VPN.)

use std::io::Read;
use std::path::Path;

use super::messages::Msg;
use super::sha256::{ct_eq, hmac_sha256};
use super::transport::{Conn, Timeouts};
use crate::error::{Context, Error, Result};

/// The shared secret, read from a file (surrounding whitespace ignored).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn load(path: &Path) -> Result<Secret> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "reading the secret file {} (create one on the head with e.g. `head -c 32 /dev/urandom | base64 > {}` and copy it to every device)",
                path.display(),
                path.display()
            )
        })?;
        Secret::from_bytes(bytes.trim_ascii()).with_context(|| path.display())
    }

    pub fn from_bytes(b: &[u8]) -> Result<Secret> {
        if b.len() < 16 {
            return Err(Error::msg(format!(
                "the secret is {} bytes long; use at least 16 random bytes (e.g. `head -c 32 /dev/urandom | base64`)",
                b.len()
            )));
        }
        Ok(Secret(b.to_vec()))
    }
}

/// 32 fresh random bytes from the OS.
pub fn nonce() -> Result<[u8; 32]> {
    let mut n = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut n)).context("reading /dev/urandom")?;
    Ok(n)
}

fn agent_mac(s: &Secret, nc: &[u8; 32], ns: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(&s.0, &[b"prima-agent", nc, ns])
}

fn head_mac(s: &Secret, nc: &[u8; 32], ns: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(&s.0, &[b"prima-head", ns, nc])
}

/// The connecting side (head, or a worker opening a ring link).
pub fn client(conn: &mut Conn, secret: &Secret, t: Timeouts) -> Result<()> {
    let nc = nonce()?;
    conn.send(&Msg::AuthInit { nonce: nc })?;
    let (ns, mac) = match conn.recv()? {
        Msg::AuthChallenge { nonce, mac } => (nonce, mac),
        Msg::Error { msg } => return Err(Error::msg(format!("{}: {msg}", conn.peer()))),
        m => return Err(Error::msg(format!("{}: expected AuthChallenge, got {}", conn.peer(), m.name()))),
    };
    if !ct_eq(&mac, &agent_mac(secret, &nc, &ns)) {
        let _ = conn.send(&Msg::Error { msg: "authentication failed: wrong secret".into() });
        return Err(Error::msg(format!(
            "{}: the agent does not know our secret (different secret files on the two devices?)",
            conn.peer()
        )));
    }
    conn.send(&Msg::AuthResponse { mac: head_mac(secret, &nc, &ns) })?;
    match conn.recv()? {
        Msg::AuthOk => {
            conn.authenticated(t);
            Ok(())
        }
        Msg::Error { msg } => Err(Error::msg(format!("{}: {msg}", conn.peer()))),
        m => Err(Error::msg(format!("{}: expected AuthOk, got {}", conn.peer(), m.name()))),
    }
}

/// The accepting side (an agent). On failure the peer gets an `Error` and the caller drops it.
pub fn server(conn: &mut Conn, secret: &Secret, t: Timeouts) -> Result<()> {
    let nc = match conn.recv()? {
        Msg::AuthInit { nonce } => nonce,
        m => return Err(Error::msg(format!("expected AuthInit, got {}", m.name()))),
    };
    let ns = nonce()?;
    conn.send(&Msg::AuthChallenge { nonce: ns, mac: agent_mac(secret, &nc, &ns) })?;
    let mac = match conn.recv()? {
        Msg::AuthResponse { mac } => mac,
        Msg::Error { msg } => return Err(Error::msg(format!("refused by the peer: {msg}"))),
        m => return Err(Error::msg(format!("expected AuthResponse, got {}", m.name()))),
    };
    if !ct_eq(&mac, &head_mac(secret, &nc, &ns)) {
        let _ = conn.send(&Msg::Error { msg: "authentication failed: wrong secret".into() });
        return Err(Error::msg("wrong secret"));
    }
    conn.send(&Msg::AuthOk)?;
    conn.authenticated(t);
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
            server(&mut c, &a, t)
        });
        let mut c = Conn::connect(&addr, "agent", t).unwrap();
        let r = client(&mut c, &Secret::from_bytes(head).unwrap(), t);
        drop(c);
        (r, srv.join().unwrap())
    }

    #[test]
    fn same_secret_passes_wrong_secret_fails_both_ways() {
        let (h, a) = pair(b"0123456789abcdef-one", b"0123456789abcdef-one");
        assert!(h.is_ok() && a.is_ok(), "{h:?} {a:?}");
        let (h, a) = pair(b"0123456789abcdef-one", b"0123456789abcdef-two");
        assert!(h.unwrap_err().to_string().contains("does not know our secret"));
        assert!(a.is_err());
    }

    #[test]
    fn short_secret_rejected() {
        assert!(Secret::from_bytes(b"short").is_err());
    }
}
