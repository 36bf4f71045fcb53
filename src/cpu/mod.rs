//! CPU execution: the worker pool, matrix products and the small element-wise kernels.

pub mod matmul;
pub mod ops;
pub mod pool;

pub use pool::{ThreadPool, default_threads};

/// Which kernel set this CPU runs (printed by `prima bench`).
pub fn kernel_summary() -> String {
    "scalar".to_string()
}
