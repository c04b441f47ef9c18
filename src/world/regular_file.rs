//! Reading files that someone else may have put in place, without hanging.
//!
//! Owns: the one way supd opens a file whose path an operator or an
//! outsider controls — unit files, the lock state, `maintenance recover
//! --from FILE`, supd.toml. Only regular files are read: a FIFO named
//! `x.toml` would block `open(2)` until a writer appears (issue 13: it hung
//! PID 1), and a device could be endless or have effects when opened.
//!
//! How: `stat` first, so a FIFO or device is never opened at all; then
//! `open` with `O_NONBLOCK` (a FIFO swapped in after the `stat` cannot
//! block the open) and `O_NOCTTY`; then `fstat` the descriptor and refuse
//! anything but a regular file (the check that cannot race). Symlinks are
//! followed — linking a unit file from elsewhere is ordinary — and the
//! target must be a regular file. Reads are bounded by a size limit.
//!
//! Must never: block on anything but the disk, read past the limit, or
//! return a descriptor that is not a regular file.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

fn require_regular(meta: &Metadata) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    let kind = if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "not a file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file (it is {kind}); supd reads only regular files"),
    ))
}

/// Open `path` for reading if it is (or links to) a regular file.
pub fn open(path: &Path) -> io::Result<File> {
    open_sized(path).map(|(f, _)| f)
}

/// As `open`, with the file's length from the check on the open
/// descriptor (no second `fstat` for the caller: a units directory of
/// 4,000 files is 4,000 system calls fewer).
pub fn open_sized(path: &Path) -> io::Result<(File, u64)> {
    require_regular(&std::fs::metadata(path)?)?;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    require_regular(&meta)?;
    Ok((f, meta.len()))
}

/// The whole content of the regular file at `path`, refused unread if it
/// is larger than `max` bytes.
pub fn read(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let (f, len) = open_sized(path)?;
    if len > max {
        return Err(too_big(len, max));
    }
    // One byte more than the length: the read that finds the end then
    // needs no growth of the buffer.
    let mut buf = Vec::with_capacity(len as usize + 1);
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(too_big(buf.len() as u64, max));
    }
    Ok(buf)
}

fn too_big(len: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("file is {len} bytes; the limit is {max}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn fifo_directory_and_device_are_refused_without_blocking() {
        let d = std::env::temp_dir().join(format!("supd-rf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let fifo = d.join("x.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t0 = Instant::now();
        let e = read(&fifo, 1024).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        let e = read(&d, 1024).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = read(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        // A symlink to a regular file is read; to a FIFO, refused.
        std::fs::write(d.join("real"), b"hello").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        assert_eq!(read(&d.join("link"), 1024).unwrap(), b"hello");
        std::os::unix::fs::symlink(&fifo, d.join("fifolink")).unwrap();
        assert!(read(&d.join("fifolink"), 1024).is_err());
        // The size limit.
        let e = read(&d.join("real"), 3).unwrap_err();
        assert!(e.to_string().contains("limit is 3"), "{e}");
        assert_eq!(
            read(&d.join("missing"), 3).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
