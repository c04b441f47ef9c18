//! `[sandbox] remove_ipc`: the System V and POSIX IPC objects a unit's
//! user (or group) owns, removed when its last run of that user ends.
//!
//! Owns: finding those objects (/proc/sysvipc, /dev/shm, /dev/mqueue) and
//! removing them. Runs on a short-lived thread of its own, never on the
//! event loop. Must never: remove anything of root (uid 0 is refused by
//! the caller) or follow a symlink out of /dev/shm.

/// Remove every IPC object owned by `uid` (or `gid`). Returns how many
/// were removed and what could not be.
pub fn remove_owned_by(uid: u32, gid: Option<u32>) -> (usize, Vec<String>) {
    let mut removed = 0;
    let mut errors = Vec::new();
    let ours = |u: u32, g: u32| u == uid || gid.is_some_and(|x| g == x);
    for (file, id_col) in [("shm", "shmid"), ("msg", "msqid"), ("sem", "semid")] {
        let path = format!("/proc/sysvipc/{file}");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut lines = text.lines();
        let Some(header) = lines.next() else { continue };
        let cols: Vec<&str> = header.split_whitespace().collect();
        let at = |n: &str| cols.iter().position(|c| *c == n);
        let (Some(i_id), Some(i_uid), Some(i_gid), Some(i_cuid), Some(i_cgid)) =
            (at(id_col), at("uid"), at("gid"), at("cuid"), at("cgid"))
        else {
            continue;
        };
        for line in lines {
            let f: Vec<u32> = line
                .split_whitespace()
                .map(|x| x.parse::<u64>().unwrap_or(u64::MAX) as u32)
                .collect();
            let get = |i: usize| f.get(i).copied().unwrap_or(u32::MAX);
            if !(ours(get(i_uid), get(i_gid)) || ours(get(i_cuid), get(i_cgid))) {
                continue;
            }
            let id = get(i_id) as i32;
            // SAFETY: IPC_RMID on an id; no pointers beyond null.
            let r = unsafe {
                match file {
                    "shm" => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                    "msg" => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                    _ => libc::semctl(id, 0, libc::IPC_RMID),
                }
            };
            if r == 0 {
                removed += 1;
            } else {
                errors.push(format!(
                    "System V {file} {id}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    for dir in ["/dev/shm", "/dev/mqueue"] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            if !ours(md.uid(), md.gid()) {
                continue;
            }
            let r = if md.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => removed += 1,
                Err(err) => errors.push(format!("{}: {err}", p.display())),
            }
        }
    }
    (removed, errors)
}

/// On a thread of its own, logging the outcome under the unit's name.
pub fn remove_in_background(unit: String, uid: u32, gid: Option<u32>) {
    if uid == 0 {
        return;
    }
    let name = unit.clone();
    // The thread inherits the mask: every signal stays with the loop.
    let all = super::sigmask::SigHold::all();
    let spawned = std::thread::Builder::new()
        .name("supd-remove-ipc".into())
        .spawn(move || {
            let (n, errors) = remove_owned_by(uid, gid);
            if n > 0 {
                tracing::info!(unit = %name, "remove_ipc: removed {n} IPC object(s) of uid {uid}");
            }
            for e in errors {
                tracing::warn!(unit = %name, "remove_ipc: {e}");
            }
        });
    drop(all);
    if let Err(e) = spawned {
        tracing::warn!(unit = %unit, "remove_ipc: no thread to remove IPC objects: {e}");
    }
}
