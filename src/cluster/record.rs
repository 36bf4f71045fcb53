//! The encrypted record layer under every authenticated connection, as a codec without I/O (so
//! the same code serves blocking sockets today and smol's async ones later).
//!
//! After the Noise handshake ([`super::auth`]) each direction is a sequence of records
//! `[u16 BE length][ChaCha20-Poly1305 ciphertext + 16-byte tag]`, at most 64 KiB each. A record's
//! nonce is not sent: both ends count records per direction, so a record that was altered,
//! dropped, replayed or moved fails its tag and ends the link. Frames (`[u32 len][version][postcard]`)
//! are cut into records and glued back; record and frame boundaries are independent.

use std::sync::Arc;

/// Largest Noise message (the spec's limit) and the plaintext that fits in one.
pub const MAX_RECORD: usize = 65535;
pub const TAG: usize = 16;
pub const MAX_PLAIN: usize = MAX_RECORD - TAG;

/// The keys of one session, shared by its sending and receiving halves.
pub type Session = Arc<snow::StatelessTransportState>;

/// A record failed authentication: tampered with, replayed, reordered, truncated, or sealed
/// under other keys.
#[derive(Debug)]
pub struct IntegrityError;

impl std::fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("integrity check failed: a record was altered, replayed or reordered on the way")
    }
}

impl std::error::Error for IntegrityError {}

/// The sending direction: plaintext in, records out.
pub struct Sealer {
    session: Session,
    nonce: u64,
}

impl Sealer {
    pub fn new(session: Session) -> Sealer {
        Sealer { session, nonce: 0 }
    }

    /// Bytes on the wire for `plain_len` bytes of plaintext.
    pub fn sealed_len(plain_len: usize) -> usize {
        plain_len + plain_len.div_ceil(MAX_PLAIN) * (2 + TAG)
    }

    /// Append `plain` as one or more records to `out`.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + Self::sealed_len(plain.len()), 0);
        self.seal_into(plain, &mut out[start..]);
    }

    /// Write `plain` as records into `out`, which holds exactly [`Self::sealed_len`] bytes
    /// (a buffer reused between frames need not be cleared).
    pub fn seal_into(&mut self, plain: &[u8], out: &mut [u8]) {
        debug_assert_eq!(out.len(), Self::sealed_len(plain.len()));
        let mut at = 0;
        for piece in plain.chunks(MAX_PLAIN) {
            let n = self
                .session
                .write_message(self.nonce, piece, &mut out[at + 2..at + 2 + piece.len() + TAG])
                .expect("a piece of at most MAX_PLAIN bytes always fits one Noise message");
            debug_assert_eq!(n, piece.len() + TAG);
            out[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
            at += 2 + n;
            self.nonce += 1;
        }
    }
}

/// The receiving direction: one record's ciphertext in, its plaintext out.
pub struct Opener {
    session: Session,
    nonce: u64,
}

impl Opener {
    pub fn new(session: Session) -> Opener {
        Opener { session, nonce: 0 }
    }

    /// Decrypt the body of one record (without its length prefix) into `out` (replaced).
    /// After an error the direction is unusable: the caller must drop the link.
    pub fn open(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<(), IntegrityError> {
        if record.len() < TAG || record.len() > MAX_RECORD {
            return Err(IntegrityError);
        }
        out.resize(record.len() - TAG, 0);
        let n = self.open_into(record, out)?;
        out.truncate(n);
        Ok(())
    }

    /// Decrypt one record into the front of `out` (at least `record.len() - TAG` bytes) and
    /// return the plaintext's length.
    pub fn open_into(&mut self, record: &[u8], out: &mut [u8]) -> Result<usize, IntegrityError> {
        if record.len() < TAG || record.len() > MAX_RECORD || out.len() < record.len() - TAG {
            return Err(IntegrityError);
        }
        let n = self.session.read_message(self.nonce, record, out).map_err(|_| IntegrityError)?;
        self.nonce += 1;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let s = crate::cluster::auth::Secret::from_bytes(b"0123456789abcdef").unwrap();
        crate::cluster::auth::in_memory_pair(&s).unwrap()
    }

    fn records(mut wire: &[u8]) -> Vec<&[u8]> {
        let mut v = Vec::new();
        while !wire.is_empty() {
            let n = u16::from_be_bytes([wire[0], wire[1]]) as usize;
            v.push(&wire[2..2 + n]);
            wire = &wire[2 + n..];
        }
        v
    }

    #[test]
    fn roundtrip_and_every_tampering_is_refused() {
        let (i, r) = pair();
        let mut tx = Sealer::new(i);
        let plain: Vec<u8> = (0..150_000u32).map(|x| (x * 7) as u8).collect();
        let mut wire = Vec::new();
        tx.seal(&plain, &mut wire);
        tx.seal(b"second", &mut wire);
        let recs = records(&wire);
        assert_eq!(recs.len(), 4);
        // Plaintext never appears on the wire.
        assert!(!wire.windows(64).any(|w| w == &plain[1000..1064]));
        let mut rx = Opener::new(r.clone());
        let (mut got, mut out) = (Vec::new(), Vec::new());
        for rec in &recs {
            rx.open(rec, &mut out).unwrap();
            got.extend_from_slice(&out);
        }
        assert_eq!(&got[..plain.len()], &plain[..]);
        assert_eq!(&got[plain.len()..], b"second");
        // A flipped bit, a replayed record, a reordered one, a truncated one: all refused.
        let mut bad = recs[0].to_vec();
        bad[100] ^= 1;
        assert!(Opener::new(r.clone()).open(&bad, &mut out).is_err());
        let mut rx = Opener::new(r.clone());
        rx.open(recs[0], &mut out).unwrap();
        assert!(rx.open(recs[0], &mut out).is_err(), "replay accepted");
        assert!(Opener::new(r.clone()).open(recs[1], &mut out).is_err(), "reordering accepted");
        assert!(Opener::new(r.clone()).open(&recs[0][..recs[0].len() - 1], &mut out).is_err());
        assert!(Opener::new(r).open(&[0; 3], &mut out).is_err());
    }
}
