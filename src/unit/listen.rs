//! `[[listen]]`: the sockets and FIFOs supd creates for a unit and passes
//! to it (socket activation, `sd_listen_fds(3)` semantics).
//!
//! Owns: the unit-file form of a listening endpoint and its validation
//! (one address kind per table, addresses parsed, modes octal, names as
//! sd_listen_fds allows them). Must never: touch the kernel — binding is
//! `crate::world::listen`'s, at spawn time.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::toml::Errs;

/// At most this many `[[listen]]` entries per unit (fds 3..3+N).
pub const MAX_LISTEN: usize = 32;

/// The socket type, as systemd's `ListenStream=` / `ListenDatagram=` /
/// `ListenSequentialPacket=` / `ListenFIFO=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenKind {
    Stream,
    Datagram,
    SeqPacket,
    Fifo,
}

impl ListenKind {
    pub fn key(self) -> &'static str {
        match self {
            ListenKind::Stream => "stream",
            ListenKind::Datagram => "datagram",
            ListenKind::SeqPacket => "seqpacket",
            ListenKind::Fifo => "fifo",
        }
    }
}

/// Where the endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// An IP address and port.
    Inet(SocketAddr),
    /// A bare port: `[::]` with IPv4 too (systemd's meaning), or 0.0.0.0
    /// where the kernel has no IPv6.
    Port(u16),
    /// A path in the filesystem (unix socket or FIFO).
    Path(PathBuf),
    /// A Linux abstract-namespace unix socket (`@name`).
    Abstract(String),
}

/// One validated `[[listen]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub kind: ListenKind,
    pub addr: ListenAddr,
    /// The entry in `LISTEN_FDNAMES`; defaults to the unit's name.
    pub name: String,
    /// Permissions of a unix socket's or FIFO's file (default 0666).
    pub mode: u32,
    /// Owner of a unix socket's or FIFO's file.
    pub user: Option<String>,
    pub group: Option<String>,
    /// For `[::]`-style addresses: refuse IPv4-mapped connections (true),
    /// accept them (false), or follow the kernel's default (None).
    pub ipv6_only: Option<bool>,
    /// listen(2) backlog for stream and seqpacket sockets.
    pub backlog: u32,
    /// SO_PASSCRED on unix sockets (systemd's `PassCredentials=`).
    pub pass_credentials: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListen {
    stream: Option<String>,
    datagram: Option<String>,
    seqpacket: Option<String>,
    fifo: Option<String>,
    name: Option<String>,
    mode: Option<String>,
    user: Option<String>,
    group: Option<String>,
    ipv6_only: Option<bool>,
    backlog: Option<u32>,
    pass_credentials: Option<bool>,
}

/// Parse an address as systemd's `Listen*=` values are written.
pub fn parse_addr(kind: ListenKind, s: &str) -> Result<ListenAddr, String> {
    let s = s.trim();
    if s.starts_with('/') {
        let p = std::path::Path::new(s);
        if p.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(format!("{s:?} contains `..`"));
        }
        if s.len() >= 108 && kind != ListenKind::Fifo {
            return Err(format!(
                "{s:?} is too long for a unix socket (at most 107 bytes)"
            ));
        }
        return Ok(ListenAddr::Path(crate::mounts::normalize(p)));
    }
    if kind == ListenKind::Fifo {
        return Err(format!("a FIFO needs an absolute path, not {s:?}"));
    }
    if let Some(name) = s.strip_prefix('@') {
        if name.is_empty() || name.len() >= 107 {
            return Err(format!("abstract socket name {s:?} must be 1 to 106 bytes"));
        }
        return Ok(ListenAddr::Abstract(name.to_string()));
    }
    if kind == ListenKind::SeqPacket {
        return Err(format!(
            "a seqpacket socket needs a unix path or @name, not {s:?}"
        ));
    }
    if let Ok(port) = s.parse::<u16>() {
        if port == 0 {
            return Err("port 0 is not a listening address".into());
        }
        return Ok(ListenAddr::Port(port));
    }
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(ListenAddr::Inet(a)),
        Ok(_) => Err("port 0 is not a listening address".into()),
        Err(_) => Err(format!(
            "{s:?} is not an address: write a path (/run/x.sock), @abstract, a port (80), ADDR:PORT (0.0.0.0:80) or [ADDR6]:PORT ([::1]:80); host names are not resolved"
        )),
    }
}

/// A valid `LISTEN_FDNAMES` entry: what sd_listen_fds_with_names accepts.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 255 && n.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Validate the `[[listen]]` tables of unit `unit`.
pub(crate) fn parse(
    errs: &mut Errs<'_>,
    unit: &str,
    raw: &[Spanned<RawListen>],
) -> Vec<ListenSpec> {
    if raw.len() > MAX_LISTEN
        && let Some(first) = raw.get(MAX_LISTEN)
    {
        errs.at(
            first.span(),
            format!("more than {MAX_LISTEN} [[listen]] tables"),
            "pass fewer sockets (each one is a descriptor the service inherits)",
        );
        return vec![];
    }
    let mut out = Vec::new();
    for r in raw {
        let span = r.span();
        let l = r.get_ref();
        let given: Vec<(ListenKind, &String)> = [
            (ListenKind::Stream, &l.stream),
            (ListenKind::Datagram, &l.datagram),
            (ListenKind::SeqPacket, &l.seqpacket),
            (ListenKind::Fifo, &l.fifo),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        let (kind, value) = match given.as_slice() {
            [one] => *one,
            [] => {
                errs.at(
                    span,
                    "a [[listen]] table names no endpoint",
                    "add one of stream = \"0.0.0.0:80\", datagram = \"/run/x.sock\", seqpacket = \"/run/x.sock\", fifo = \"/run/x.fifo\"",
                );
                continue;
            }
            _ => {
                errs.at(
                    span,
                    "a [[listen]] table names more than one of stream, datagram, seqpacket, fifo",
                    "write one [[listen]] table per socket",
                );
                continue;
            }
        };
        let addr = match parse_addr(kind, value) {
            Ok(a) => a,
            Err(why) => {
                errs.at(
                    span,
                    format!("listen {} = {value:?}: {why}", kind.key()),
                    "e.g. stream = \"127.0.0.1:8080\" or stream = \"/run/app/app.sock\"",
                );
                continue;
            }
        };
        let name = l.name.clone().unwrap_or_else(|| unit.to_string());
        if !valid_name(&name) {
            errs.at(
                span,
                format!("listen name {name:?} is not a valid LISTEN_FDNAMES entry"),
                "printable ASCII without `:` or spaces, at most 255 bytes",
            );
            continue;
        }
        let mode = match &l.mode {
            None => 0o666,
            Some(m) => match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
                Ok(v) if v <= 0o7777 => v,
                _ => {
                    errs.at(
                        span,
                        format!("listen mode {m:?} is not an octal mode"),
                        "e.g. mode = \"0660\"",
                    );
                    continue;
                }
            },
        };
        let is_file = matches!(addr, ListenAddr::Path(_));
        if !is_file && (l.mode.is_some() || l.user.is_some() || l.group.is_some()) {
            errs.at(
                span,
                "mode, user and group apply to unix sockets and FIFOs in the filesystem only",
                "remove them from this [[listen]] table",
            );
            continue;
        }
        let inet = matches!(addr, ListenAddr::Inet(_) | ListenAddr::Port(_));
        if l.ipv6_only.is_some() && !inet {
            errs.at(
                span,
                "ipv6_only applies to IP sockets only",
                "remove it from this [[listen]] table",
            );
            continue;
        }
        if l.pass_credentials == Some(true) && (inet || kind == ListenKind::Fifo) {
            errs.at(
                span,
                "pass_credentials applies to unix sockets only",
                "remove it from this [[listen]] table",
            );
            continue;
        }
        let backlog = l.backlog.unwrap_or(libc::SOMAXCONN as u32);
        if backlog == 0 {
            errs.at(
                span,
                "listen backlog 0",
                "leave it out for the kernel's maximum",
            );
            continue;
        }
        out.push(ListenSpec {
            kind,
            addr,
            name,
            mode,
            user: l.user.clone(),
            group: l.group.clone(),
            ipv6_only: l.ipv6_only,
            backlog,
            pass_credentials: l.pass_credentials.unwrap_or(false),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_systemd_writes_them() {
        use ListenKind::*;
        assert_eq!(
            parse_addr(Stream, "/run/x.sock"),
            Ok(ListenAddr::Path("/run/x.sock".into()))
        );
        assert_eq!(parse_addr(Stream, "80"), Ok(ListenAddr::Port(80)));
        assert_eq!(
            parse_addr(Datagram, "0.0.0.0:111"),
            Ok(ListenAddr::Inet("0.0.0.0:111".parse().unwrap()))
        );
        assert_eq!(
            parse_addr(Stream, "[::1]:2947"),
            Ok(ListenAddr::Inet("[::1]:2947".parse().unwrap()))
        );
        assert_eq!(
            parse_addr(SeqPacket, "@sup"),
            Ok(ListenAddr::Abstract("sup".into()))
        );
        assert!(parse_addr(SeqPacket, "127.0.0.1:1").is_err());
        assert!(parse_addr(Fifo, "x").is_err());
        assert!(parse_addr(Stream, "localhost:80").is_err());
        assert!(parse_addr(Stream, "0").is_err());
        assert!(parse_addr(Stream, "/run/../x").is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("cups.socket"));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(""));
    }
}
