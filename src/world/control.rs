use std::path::{Path, PathBuf};
use crate::protocol::{Request, Response};
pub struct Peer { pub uid: u32, pub gid: u32, pub pid: Option<i32> }
impl Peer { pub fn user_name(&self) -> String { String::new() } }
pub struct ControlRequest { pub peer: Peer, pub req: Request, pub reply: tokio::sync::oneshot::Sender<Response> }
pub fn bind(_p: &Path) -> std::io::Result<tokio::net::UnixListener> { todo_stub() }
fn todo_stub<T>() -> T { panic!() }
pub async fn serve(_l: tokio::net::UnixListener, _tx: tokio::sync::mpsc::Sender<ControlRequest>, _s: impl std::future::Future) {}
pub fn default_socket_path() -> PathBuf { PathBuf::new() }
