//! Everything that travels between the head and the agents, as one postcard enum.
//!
//! A frame is `[u32 LE length][u8 PROTOCOL_VERSION][postcard(Msg)]`, where the length counts the
//! version byte and the payload (a heartbeat is a frame without payload); frames travel only
//! inside the sealed records of an authenticated link ([`super::record`], [`super::auth`]).
//! Postcard is not self-describing, so the version byte is checked: peers built from different
//! protocol versions understand each other only for the frozen bootstrap messages
//! ([`Msg::is_frozen`]: hello, binary shipping — enough for a head to upgrade an agent) and fail
//! loudly on anything else instead of misreading it.

use serde::{Deserialize, Serialize};

pub use crate::model::KvOp;
use crate::model::SeqPos;

/// Bumped on every incompatible change of [`Msg`]. The first ten variants (the retired
/// authentication messages, `AuthOk`, `Hello`, `Ship*`, `Restarting`) never change shape or
/// index, and together with the Noise handshake ([`super::auth::PREFACE`], [`super::auth::NOISE`])
/// and the record layer they are the frozen bootstrap: any agent from protocol 3 on can be
/// upgraded by a newer head. (3: every link encrypted; agents of protocol 2 or older, which
/// spoke in the clear, are updated by hand once.)
/// What an agent tells the head over the control link when `prima down` ends its session:
/// the head then stops instead of forming the ring again.
pub const STOPPED_BY_DOWN: &str = "the ring was stopped by `prima down`";

pub const PROTOCOL_VERSION: u8 = 4;

/// A tensor the head wants a device to hold: its name, size and sha256, and where its bytes go
/// in the device's cache file (offset from the start of that file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub file_offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingRole {
    /// The connecting peer is the receiver's predecessor: the receiver reads activations from it.
    Inbound,
    /// The connecting peer is the receiver's successor: the receiver writes activations to it.
    Outbound,
}

/// Which compute engine a worker runs. `Fake` is a deterministic stand-in used by tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineKind {
    Real,
    Fake,
}

/// Per-device counters, reported when a ring stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Single-token batches seen (decode steps).
    pub decode_steps: u64,
    /// Nanoseconds spent in decode steps: computing, waiting for input, sending output.
    pub compute_ns: u64,
    pub wait_ns: u64,
    pub send_ns: u64,
    /// All batches (prefill included).
    pub batches: u64,
    /// Peak memory pressure during the session, parts per million (`crate::memory::pressure`).
    pub mem_pressure_ppm: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    // --- authentication: the Noise handshake of `auth` carries no `Msg`; these three are
    // retired (protocol 2's HMAC exchange), kept for the indices and never accepted ---
    AuthInit {
        nonce: [u8; 32],
    },
    AuthChallenge {
        nonce: [u8; 32],
        mac: [u8; 32],
    },
    AuthResponse {
        mac: [u8; 32],
    },
    /// The agent's first sealed frame: proves to the head that it holds the cluster secret.
    AuthOk,

    // --- control connection: head -> agent requests, agent -> head replies ---
    Hello,
    HelloReply {
        version: String,
        build_id: [u8; 32],
        os: String,
        arch: String,
    },
    /// A new binary follows in `ShipChunk`s; the agent verifies `sha256`, installs it next to
    /// itself and re-executes with the same arguments.
    ShipBegin {
        size: u64,
        sha256: [u8; 32],
    },
    ShipChunk {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    ShipEnd,
    /// Sent by the agent right before it re-executes.
    Restarting,
    /// Measure this device for the scheduler (or reuse the measurement cached for this build).
    /// `fresh`: measure again, do not answer from the cache (`prima up --reprofile`).
    ProfileRequest {
        fresh: bool,
    },
    /// A `DeviceProfile` as JSON (the format `prima bench --profile --json` prints).
    ProfileReply {
        json: String,
    },
    /// Does the device hold these tensors of model `model_id`? `header` is the GGUF header of the
    /// device's cache file (every metadata key, the listed tensors' infos).
    ModelCheck {
        model_id: String,
        #[serde(with = "serde_bytes")]
        header: Vec<u8>,
        tensors: Vec<TensorEntry>,
    },
    /// Bytes present and verified, per tensor of the last `ModelCheck` (== size when complete).
    ModelStatus {
        have: Vec<u64>,
    },
    /// Bytes of tensor `index` starting at `offset` (resumes where `ModelStatus` left off).
    TensorChunk {
        index: u32,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// All chunks sent; the agent verifies, finalises the cache file and answers `ModelStatus`.
    StreamEnd,
    /// Load the given windows (layer ranges, one per round) of the cached model, with a KV
    /// cache of `n_seq` sequences of `n_ctx` positions.
    Assign {
        session: u64,
        model_id: String,
        windows: Vec<(u32, u32)>,
        n_ctx: u32,
        n_seq: u32,
        threads: u32,
        engine: EngineKind,
        /// The last layers of each window that run on the agent's GPU (`gpu_layers`).
        gpu_layers: u32,
    },
    /// Windows loaded; the agent accepts ring connections for `session`.
    Assigned {
        load_ms: u64,
    },
    /// Open the outbound ring link to `next` (None: the head connects to us instead). The
    /// keys are the ones the head pinned: the device at `next`, the one before us (the head for
    /// device 1) and the head's own; a ring link from or to any other key is refused.
    Connect {
        next: Option<String>,
        next_key: Option<[u8; 32]>,
        prev_key: [u8; 32],
        head_key: [u8; 32],
    },
    /// Both ring links are up.
    RingReady,
    /// Stop the ring; the agent answers `Stopped` and returns to idle.
    Stop,
    Stopped {
        stats: WorkerStats,
    },

    // --- ring connection ---
    /// First message on a ring link after authentication.
    RingJoin {
        session: u64,
        role: RingRole,
    },
    /// Hidden states (one `n_embd`-wide f32 row per entry of `rows`: its sequence and
    /// position) of a chunk entering `round`.
    Activations {
        round: u32,
        rows: Vec<SeqPos>,
        data: Vec<f32>,
    },
    /// A KV cache operation, applied by every device to all its windows and relayed back to
    /// the head.
    Kv(KvOp),

    // --- anywhere ---
    Heartbeat,
    Error {
        msg: String,
    },

    // --- appended (earlier variants keep their indices) ---
    /// `prima down`: stop every ring session this agent serves (the agent stays up).
    Down,
    DownReply {
        sessions: u32,
    },
}

impl Msg {
    /// Messages whose index and shape never change, so that any two versions of prima can
    /// authenticate, say hello and ship a binary (the upgrade path).
    pub fn is_frozen(&self) -> bool {
        matches!(
            self,
            Msg::AuthInit { .. }
                | Msg::AuthChallenge { .. }
                | Msg::AuthResponse { .. }
                | Msg::AuthOk
                | Msg::Hello
                | Msg::HelloReply { .. }
                | Msg::ShipBegin { .. }
                | Msg::ShipChunk { .. }
                | Msg::ShipEnd
                | Msg::Restarting
        )
    }

    /// Short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::AuthInit { .. } => "AuthInit",
            Msg::AuthChallenge { .. } => "AuthChallenge",
            Msg::AuthResponse { .. } => "AuthResponse",
            Msg::AuthOk => "AuthOk",
            Msg::Hello => "Hello",
            Msg::HelloReply { .. } => "HelloReply",
            Msg::ShipBegin { .. } => "ShipBegin",
            Msg::ShipChunk { .. } => "ShipChunk",
            Msg::ShipEnd => "ShipEnd",
            Msg::Restarting => "Restarting",
            Msg::ProfileRequest { .. } => "ProfileRequest",
            Msg::ProfileReply { .. } => "ProfileReply",
            Msg::ModelCheck { .. } => "ModelCheck",
            Msg::ModelStatus { .. } => "ModelStatus",
            Msg::TensorChunk { .. } => "TensorChunk",
            Msg::StreamEnd => "StreamEnd",
            Msg::Assign { .. } => "Assign",
            Msg::Assigned { .. } => "Assigned",
            Msg::Connect { .. } => "Connect",
            Msg::RingReady => "RingReady",
            Msg::Stop => "Stop",
            Msg::Stopped { .. } => "Stopped",
            Msg::RingJoin { .. } => "RingJoin",
            Msg::Activations { .. } => "Activations",
            Msg::Kv(_) => "Kv",
            Msg::Heartbeat => "Heartbeat",
            Msg::Error { .. } => "Error",
            Msg::Down => "Down",
            Msg::DownReply { .. } => "DownReply",
        }
    }
}
