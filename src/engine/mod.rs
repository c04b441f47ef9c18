//! The engine. (Placeholder.)
pub mod locks;
