//! supd-wide settings (`/etc/supd/supd.toml`). (Placeholder.)
