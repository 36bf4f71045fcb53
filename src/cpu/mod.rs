//! CPU execution: the worker pool, matrix products and the small element-wise kernels.

pub mod matmul;
pub mod ops;
pub mod pool;

pub use pool::{ThreadPool, default_threads};
