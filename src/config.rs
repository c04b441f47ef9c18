use std::path::{Path, PathBuf};
use crate::error::UnitError;
use crate::unit::MountReq;
#[derive(Debug, Default, Clone)]
pub struct Config { pub units_dir: Option<PathBuf>, pub state_dir: Option<PathBuf>, pub socket: Option<PathBuf>, pub log_level: Option<String>, pub max_parallel_starts: Option<u32>, pub hostname: Option<String>, pub state_mount: Option<MountReq> }
impl Config { pub fn load(_p: &Path) -> Result<Option<Config>, Vec<UnitError>> { Ok(None) } }
