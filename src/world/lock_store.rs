//! Durable storage of the lock state and the audit log.
//! (Placeholder: replaced by the lock-store work.)
