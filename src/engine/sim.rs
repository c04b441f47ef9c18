//! Seeded simulation of the engine's world. (Placeholder, being written.)
