//! Everything that touches the kernel.
pub mod lock_store;
