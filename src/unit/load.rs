//! Loading a units directory. (Placeholder.)
