use crate::mounts::MountTable;
pub fn read_mount_table() -> std::io::Result<MountTable> { Ok(MountTable::parse(&std::fs::read_to_string("/proc/self/mountinfo")?)) }
pub struct MountWatcher;
impl MountWatcher { pub fn new() -> std::io::Result<MountWatcher> { Ok(MountWatcher) } pub async fn changed(&mut self) -> std::io::Result<MountTable> { std::future::pending().await } }
