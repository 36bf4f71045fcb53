//! Scheduling: the model's cost ([`model_cost`]), the in-tree MILP solver ([`ilp`]) and Halda
//! ([`halda`]), which turns device profiles into a plan of layer windows.

pub mod halda;
pub mod ilp;
pub mod model_cost;

pub use halda::{Plan, plan, render};
pub use model_cost::{ModelCost, ModelShape};
