//! Scheduling: which device runs which layers.
//!
//! ```text
//!  GGUF tensor table ──► model_cost::ModelCost (FLOPs/bytes per layer & format, KV, LM head)
//!  prima bench --profile ──► profile::DeviceProfile (one per device; postcard / JSON)
//!                               │
//!           halda::plan(profiles, cost, options) ──► Plan { k, w/n per device, ms breakdown,
//!                               │                          dropped devices with reasons }
//!                               └── ilp::solve (exact MILP: bounded simplex + branch and bound)
//! ```
//!
//! Everything here is pure (no I/O): the same inputs give the same plan on every device.

pub mod calibrate;
pub mod halda;
pub mod ilp;
pub mod model_cost;
pub mod testbeds;

pub use halda::{Plan, plan, render};
pub use model_cost::{ModelCost, ModelShape};
