//! The cluster: `prima agent` on every device, `prima up cluster.toml` on the head, and the
//! piped ring that carries activations hop to hop.
//!
//! ```text
//!  config ── cluster.toml          auth ── Noise XXpsk3 handshake, key pins    sha256 ── sha2
//!  messages ── postcard enum       record ── sealed records (codec, no I/O)
//!  transport ── framed, sealed TCP, timeouts, heartbeats
//!  agent ── serves a device: ship binary, cache layers, run windows in the ring
//!  bootstrap ── head side: connect, upgrade, stream layers, assign, form the ring
//!  ring ── the per-token protocol (head driver and worker loop), engine behind a trait
//! ```

pub mod agent;
pub mod auth;
pub mod bootstrap;
pub mod builds;
pub mod cache;
pub mod config;
pub mod local;
pub mod messages;
pub mod planning;
pub mod record;
pub mod ring;
pub mod sha256;
pub mod transport;
