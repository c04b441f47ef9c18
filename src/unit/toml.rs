//! Parsing one unit file. (Placeholder.)
