//! Engine scenario tests. (Placeholder, being written.)
