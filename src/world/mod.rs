//! Everything that touches the kernel: processes, mounts, sockets, files,
//! signals. The engine never calls into here; the driver does.
pub mod audit;
pub mod cgroup;
pub mod conditions;
pub mod control;
pub mod devices;
pub mod fdtable;
pub mod host_check;
pub mod http;
pub mod init;
pub mod line_writer;
pub mod lock_store;
pub mod log;
pub mod logstore;
pub mod mainpid;
pub mod mount_watch;
pub mod notify;
pub mod output;
pub mod probe;
pub mod regular_file;
pub mod sandbox;
pub mod shim;
pub mod sigmask;
pub mod signals;
pub mod spawn;
pub mod trim;
