//! systemd `.socket` units as the `[[listen]]` tables of the service they
//! activate.
//!
//! Owns: what each `[Socket]` directive means in supd — the Listen*
//! addresses, modes, owners and names map onto `[[listen]]`; what supd
//! cannot honour is refused by name with the socket file's line — and the
//! few sockets systemd itself ships that services name (`syslog.socket`).
//! Must never: do I/O (the command reads the files), or pass a socket
//! whose meaning would change silently (Accept=yes, netlink, special
//! files are refused).

use super::syntax::{self, Entry, UnitFile};
use super::toml_out::{Item, V};
use super::{Finding, Severity};
use crate::unit::listen::{ListenKind, parse_addr};

/// A `.socket` file as read: its display path and parsed text.
#[derive(Debug, Clone)]
pub struct SocketSrc {
    pub path: String,
    pub file: UnitFile,
    /// A socket systemd itself provides, rewritten for a host without
    /// systemd (say so when it is used).
    pub builtin_note: Option<&'static str>,
    /// Given on the command line (it activates its service even when the
    /// service does not name it).
    pub given: bool,
}

/// Sockets systemd ships (not the package): their supd meaning.
pub fn builtin(name: &str) -> Option<SocketSrc> {
    let (text, note) = match name {
        // journald forwards to /run/systemd/journal/syslog; without a
        // journal, syslog(3) writes to /dev/log, so that is the socket the
        // syslog daemon must own.
        "syslog.socket" => (
            "[Socket]\nListenDatagram=/dev/log\nSocketMode=0666\nPassCredentials=yes\nService=syslog.service\n",
            "systemd's syslog.socket is where journald forwards messages (/run/systemd/journal/syslog); supd has no journal, so the syslog daemon is given /dev/log itself, where syslog(3) writes",
        ),
        _ => return None,
    };
    let mut file = UnitFile::default();
    let mut problems = Vec::new();
    syntax::parse_into(text, 0, &mut file, &mut problems);
    Some(SocketSrc {
        path: format!("(systemd's {name}, built in)"),
        file,
        builtin_note: Some(note),
        given: false,
    })
}

/// The service a socket activates: `Service=`, else the same name (the
/// template `NAME@.service` with `Accept=yes`, as systemd).
pub fn service_of(name: &str, s: &SocketSrc) -> String {
    let sec = s.file.section("Socket");
    let last = |key: &str| {
        sec.and_then(|sec| sec.entries.iter().rev().find(|e| e.key == key))
            .map(|e| e.value.trim().to_string())
    };
    if let Some(service) = last("Service") {
        return service;
    }
    let stem = name.strip_suffix(".socket").unwrap_or(name);
    if last("Accept").and_then(|v| syntax::parse_bool(&v)) == Some(true) {
        format!("{stem}@.service")
    } else {
        format!("{stem}.service")
    }
}

/// `Accept=yes`?
pub fn accepts(s: &SocketSrc) -> bool {
    s.file
        .section("Socket")
        .and_then(|sec| sec.entries.iter().rev().find(|e| e.key == "Accept"))
        .and_then(|e| syntax::parse_bool(&e.value))
        == Some(true)
}

/// What the socket file became: `[[listen]]` tables, and findings about
/// the socket file's own lines.
pub struct Mapped {
    pub listens: Vec<Vec<Item>>,
    pub findings: Vec<Finding>,
}

struct Listen {
    kind: ListenKind,
    value: String,
    /// Where it was written, for the comment above the key.
    src: String,
}

/// Map socket `name` (e.g. `cups.socket`).
pub fn map(name: &str, s: &SocketSrc) -> Mapped {
    let mut findings = Vec::new();
    let base = s.path.rsplit('/').next().unwrap_or(&s.path).to_string();
    let mut find = |sev: Severity, e: &Entry, why: String| {
        findings.push(Finding {
            severity: sev,
            directive: e.key.clone(),
            file: s.path.clone(),
            line: e.line,
            why,
        });
    };
    let mut listens: Vec<Listen> = Vec::new();
    let mut mode: Option<(String, String)> = None;
    let mut user: Option<(String, String)> = None;
    let mut group: Option<(String, String)> = None;
    let mut fd_name: Option<(String, String)> = None;
    let mut ipv6_only: Option<(bool, String)> = None;
    let mut backlog: Option<(i64, String)> = None;
    let mut passcred: Option<String> = None;
    for sec in &s.file.sections {
        for e in &sec.entries {
            let src = if s.builtin_note.is_some() {
                format!("{}={}  ({name}, built in)", e.key, e.value)
            } else {
                format!("{}={}  ({base}:{})", e.key, e.value, e.line)
            };
            let v = e.value.trim().to_string();
            match (sec.name.as_str(), e.key.as_str()) {
                ("Socket", "ListenStream" | "ListenDatagram" | "ListenSequentialPacket" | "ListenFIFO") => {
                    let kind = match e.key.as_str() {
                        "ListenStream" => ListenKind::Stream,
                        "ListenDatagram" => ListenKind::Datagram,
                        "ListenSequentialPacket" => ListenKind::SeqPacket,
                        _ => ListenKind::Fifo,
                    };
                    if v.is_empty() {
                        // An empty assignment resets the list (drop-ins).
                        listens.clear();
                        continue;
                    }
                    if v.starts_with("vsock:") {
                        find(Severity::Refused, e, "AF_VSOCK sockets are not supported by supd's [[listen]]".into());
                        continue;
                    }
                    if v.contains('%') {
                        find(Severity::Refused, e, "specifiers in socket addresses are not expanded; write the address out".into());
                        continue;
                    }
                    match parse_addr(kind, &v) {
                        Ok(_) => listens.push(Listen { kind, value: v, src }),
                        Err(why) => find(Severity::Refused, e, why),
                    }
                }
                ("Socket", "ListenNetlink" | "ListenSpecial" | "ListenMessageQueue" | "ListenUSBFunction") => {
                    find(Severity::Refused, e, "supd's [[listen]] passes stream, datagram and seqpacket sockets and FIFOs only".into());
                }
                ("Socket", "Accept") => match syntax::parse_bool(&v) {
                    Some(false) => {}
                    Some(true) => find(Severity::Refused, e, "Accept=yes (one service instance per connection, inetd style) is not supported; supd passes the listening socket to one long-running service".into()),
                    None => find(Severity::Refused, e, format!("{v:?} is not a boolean")),
                },
                ("Socket", "SocketMode") => match u32::from_str_radix(&v, 8) {
                    Ok(m) if m <= 0o7777 => mode = Some((format!("{m:04o}"), src)),
                    _ => find(Severity::Refused, e, format!("{v:?} is not an octal mode")),
                },
                ("Socket", "SocketUser") => user = Some((v, src)),
                ("Socket", "SocketGroup") => group = Some((v, src)),
                ("Socket", "FileDescriptorName") => {
                    if crate::unit::listen::valid_name(&v) {
                        fd_name = Some((v, src));
                    } else {
                        find(Severity::Refused, e, format!("{v:?} is not a valid descriptor name (printable ASCII, no `:`)"));
                    }
                }
                ("Socket", "Service") => {}
                ("Socket", "BindIPv6Only") => match v.as_str() {
                    "default" => ipv6_only = None,
                    "both" => ipv6_only = Some((false, src)),
                    "ipv6-only" => ipv6_only = Some((true, src)),
                    other => match syntax::parse_bool(other) {
                        Some(b) => ipv6_only = Some((b, src)),
                        None => find(Severity::Refused, e, format!("{other:?}: expected default, both or ipv6-only")),
                    },
                },
                ("Socket", "Backlog") => match v.parse::<u32>() {
                    Ok(n) if n > 0 => backlog = Some((i64::from(n), src)),
                    _ => find(Severity::Refused, e, format!("{v:?} is not a backlog size")),
                },
                ("Socket", "PassCredentials") => match syntax::parse_bool(&v) {
                    Some(true) => passcred = Some(src),
                    Some(false) => passcred = None,
                    None => find(Severity::Refused, e, format!("{v:?} is not a boolean")),
                },
                ("Socket", "RemoveOnStop") => find(Severity::Note, e, "supd leaves the socket file in place while it runs and replaces a stale one when it binds again".into()),
                ("Socket", "DirectoryMode") => find(Severity::Approximated, e, "supd creates missing parent directories with mode 0755".into()),
                ("Socket", "PassSecurity" | "PassPacketInfo" | "SmackLabel" | "SmackLabelIPIn" | "SmackLabelIPOut" | "SELinuxContextFromNet") => {
                    find(Severity::Note, e, "security labels are not passed on supd's sockets".into())
                }
                ("Socket", "ReceiveBuffer" | "SendBuffer" | "PipeSize") => find(Severity::Approximated, e, "supd leaves the kernel's default buffer size".into()),
                ("Socket", "TriggerLimitIntervalSec" | "TriggerLimitBurst" | "PollLimitIntervalSec" | "PollLimitBurst") => {
                    find(Severity::Note, e, "supd starts the service at boot, not on the first connection: no activation to limit".into())
                }
                ("Socket", "MaxConnections" | "MaxConnectionsPerSource") => find(Severity::Note, e, "only used with Accept=yes".into()),
                ("Socket", "KeepAlive" | "NoDelay" | "Broadcast" | "ReusePort" | "FreeBind" | "Transparent" | "DeferAcceptSec" | "Priority" | "IPTOS" | "IPTTL" | "Mark" | "BindToDevice" | "Symlinks" | "Writable" | "FlushPending" | "Timestamping" | "KeepAliveTimeSec" | "KeepAliveIntervalSec" | "KeepAliveProbes" | "TCPCongestion" | "ExecStartPre" | "ExecStartPost" | "ExecStopPre" | "ExecStopPost" | "MessageQueueMaxMessages" | "MessageQueueMessageSize") => {
                    find(Severity::Refused, e, "not supported by supd's [[listen]]".into())
                }
                ("Socket", _) => find(Severity::Refused, e, "not a [Socket] directive supd import knows; not honoured".into()),
                ("Unit", k) if k.starts_with("Condition") || k.starts_with("Assert") => {
                    find(Severity::Approximated, e, format!("a condition of {name} is not checked: supd binds the sockets when the service starts, under the service's own conditions"))
                }
                ("Unit", "Description" | "Documentation" | "DefaultDependencies") => {}
                ("Unit", _) => find(Severity::Note, e, format!("a directive of {name}'s own unit; its sockets belong to the service under supd")),
                ("Install", _) => {}
                (other, _) => find(Severity::Refused, e, format!("[{other}] is not a section of a socket unit")),
            }
        }
    }
    let default_name = fd_name
        .as_ref()
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| name.to_string());
    let mut out = Vec::new();
    for l in &listens {
        let is_path = l.value.starts_with('/');
        let is_unix = is_path || l.value.starts_with('@');
        let mut items = vec![Item {
            key: l.kind.key().into(),
            value: V::Str(l.value.clone()),
            note: vec![l.src.clone()],
        }];
        let mut add = |key: &str, value: V, src: &str| {
            items.push(Item {
                key: key.into(),
                value,
                note: if src.is_empty() {
                    vec![]
                } else {
                    vec![src.to_string()]
                },
            })
        };
        match &fd_name {
            Some((n, src)) => add("name", V::Str(n.clone()), src),
            None => add(
                "name",
                V::Str(default_name.clone()),
                &format!("FileDescriptorName= unset: systemd names the descriptor {name}"),
            ),
        }
        if is_path {
            if let Some((m, src)) = &mode {
                add("mode", V::Str(m.clone()), src);
            }
            if let Some((u, src)) = &user {
                add("user", V::Str(u.clone()), src);
            }
            if let Some((g, src)) = &group {
                add("group", V::Str(g.clone()), src);
            }
        }
        if !is_unix
            && l.kind != ListenKind::Fifo
            && let Some((b, src)) = &ipv6_only
            && (l.value.starts_with('[') || l.value.parse::<u16>().is_ok())
        {
            add("ipv6_only", V::Bool(*b), src);
        }
        if l.kind != ListenKind::Datagram
            && l.kind != ListenKind::Fifo
            && let Some((n, src)) = &backlog
        {
            add("backlog", V::Int(*n), src);
        }
        if is_unix
            && l.kind != ListenKind::Fifo
            && let Some(src) = &passcred
        {
            add("pass_credentials", V::Bool(true), src);
        }
        out.push(items);
    }
    Mapped {
        listens: out,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::Imported;
    use crate::import::map::{Context, map as map_unit};
    use std::collections::{BTreeMap, BTreeSet};

    fn socket(path: &str, text: &str, given: bool) -> SocketSrc {
        let (file, _) = syntax::parse(text);
        SocketSrc {
            path: path.into(),
            file,
            builtin_note: None,
            given,
        }
    }

    fn import(
        name: &str,
        text: &str,
        sockets: &BTreeMap<String, SocketSrc>,
        aliases: &BTreeMap<String, String>,
        known: &[&str],
    ) -> Imported {
        let (f, p) = syntax::parse(text);
        let sources = vec![format!("/lib/systemd/system/{name}")];
        let known: BTreeSet<String> = known.iter().map(|s| s.to_string()).collect();
        let ctx = Context {
            unit_file_name: name,
            sources: &sources,
            known: &known,
            before_me: &[],
            after_me: &[],
            fstab: &[],
            host: &syntax::Host::default(),
            sockets,
            aliases,
        };
        map_unit(ctx, &f, &p)
    }

    fn errors(i: &Imported) -> Vec<String> {
        i.findings
            .iter()
            .filter(|f| f.severity == Severity::Refused)
            .map(|f| f.display(false))
            .collect()
    }

    fn listens(i: &Imported) -> Vec<toml::Value> {
        let v: toml::Value = toml::from_str(i.toml.as_deref().unwrap_or("")).expect("valid TOML");
        v.get("listen")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_required_socket_becomes_the_services_listen_tables() {
        let mut sockets = BTreeMap::new();
        sockets.insert(
            "rpcbind.socket".to_string(),
            socket(
                "/lib/systemd/system/rpcbind.socket",
                "[Unit]\nDefaultDependencies=no\n[Socket]\nListenStream=/run/rpcbind.sock\nBindIPv6Only=ipv6-only\nListenStream=0.0.0.0:111\nListenDatagram=0.0.0.0:111\nListenStream=[::]:111\nSocketMode=0660\nSocketUser=_rpc\nFileDescriptorName=rpc\n[Install]\nWantedBy=sockets.target\n",
                false,
            ),
        );
        let i = import(
            "rpcbind.service",
            "[Unit]\nRequires=rpcbind.socket\nAfter=rpcbind.socket\n[Service]\nExecStart=/sbin/rpcbind -f -w\n",
            &sockets,
            &BTreeMap::new(),
            &[],
        );
        assert!(errors(&i).is_empty(), "{:?}", errors(&i));
        let l = listens(&i);
        assert_eq!(l.len(), 4, "{l:?}");
        assert_eq!(l[0]["stream"].as_str(), Some("/run/rpcbind.sock"));
        assert_eq!(l[0]["mode"].as_str(), Some("0660"));
        assert_eq!(l[0]["user"].as_str(), Some("_rpc"));
        assert_eq!(l[0]["name"].as_str(), Some("rpc"));
        assert!(l[1].get("mode").is_none(), "no file mode on an IP socket");
        assert!(
            l[1].get("ipv6_only").is_none(),
            "0.0.0.0 is not an IPv6 address"
        );
        assert_eq!(l[2]["datagram"].as_str(), Some("0.0.0.0:111"));
        assert_eq!(l[3]["ipv6_only"].as_bool(), Some(true));
        // And the result is a unit supd accepts.
        let text = i.toml.unwrap();
        let spec =
            crate::unit::toml::parse_unit("rpcbind", std::path::Path::new("rpcbind.toml"), &text)
                .expect("the generated unit is valid");
        assert_eq!(spec.listen.len(), 4);
    }

    #[test]
    fn unhonourable_sockets_are_refused_by_directive_and_missing_ones_named() {
        let mut sockets = BTreeMap::new();
        sockets.insert(
            "x.socket".to_string(),
            socket(
                "/lib/systemd/system/x.socket",
                "[Socket]\nListenStream=22\nAccept=yes\nListenNetlink=kobject-uevent 1\n",
                false,
            ),
        );
        let i = import(
            "x.service",
            "[Unit]\nRequires=x.socket\n[Service]\nExecStart=/bin/x\n",
            &sockets,
            &BTreeMap::new(),
            &[],
        );
        let e = errors(&i);
        assert!(
            e.iter()
                .any(|l| l.contains("x.service:2: error: Requires=: x.socket has Accept=yes")),
            "{e:?}"
        );
        sockets.insert(
            "z.socket".to_string(),
            socket(
                "/lib/systemd/system/z.socket",
                "[Socket]\nListenStream=22\nListenNetlink=kobject-uevent 1\nReusePort=yes\n",
                false,
            ),
        );
        let i = import(
            "z.service",
            "[Unit]\nRequires=z.socket\n[Service]\nExecStart=/bin/z\n",
            &sockets,
            &BTreeMap::new(),
            &[],
        );
        let e = errors(&i);
        assert!(
            e.iter()
                .any(|l| l.contains("z.socket:3: error: ListenNetlink=")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("z.socket:4: error: ReusePort=")),
            "{e:?}"
        );
        let i = import(
            "y.service",
            "[Unit]\nRequires=y.socket\n[Service]\nExecStart=/bin/y\nStandardInput=socket\n",
            &BTreeMap::new(),
            &BTreeMap::new(),
            &[],
        );
        let e = errors(&i);
        assert!(
            e.iter()
                .any(|l| l.contains(":2: error: Requires=: y.socket was not found")),
            "{e:?}"
        );
        assert!(e.iter().any(|l| l.contains("StandardInput=")), "{e:?}");
    }

    #[test]
    fn syslog_socket_is_dev_log_and_anothers_socket_is_its_service() {
        // rsyslog: syslog.socket activates syslog.service, its Alias=.
        let mut aliases = BTreeMap::new();
        aliases.insert("syslog.service".to_string(), "rsyslog".to_string());
        let i = import(
            "rsyslog.service",
            "[Unit]\nRequires=syslog.socket\n[Service]\nType=notify\nExecStart=/usr/sbin/rsyslogd -n -iNONE\n[Install]\nAlias=syslog.service\n",
            &BTreeMap::new(),
            &aliases,
            &[],
        );
        assert!(errors(&i).is_empty(), "{:?}", errors(&i));
        let l = listens(&i);
        assert_eq!(l[0]["datagram"].as_str(), Some("/dev/log"));
        assert_eq!(l[0]["pass_credentials"].as_bool(), Some(true));
        // gpsdctl@ requires gpsd.socket, which is gpsd's.
        let mut sockets = BTreeMap::new();
        sockets.insert(
            "gpsd.socket".to_string(),
            socket(
                "/l/gpsd.socket",
                "[Socket]\nListenStream=/run/gpsd.sock\n",
                false,
            ),
        );
        let i = import(
            "gpsdctl@.service",
            "[Unit]\nRequires=gpsd.socket\nAfter=gpsd.socket\n[Service]\nType=oneshot\nExecStart=/bin/true %i\n",
            &sockets,
            &BTreeMap::new(),
            &["gpsd"],
        );
        assert!(errors(&i).is_empty(), "{:?}", errors(&i));
        let v: toml::Value = toml::from_str(i.toml.as_deref().unwrap()).unwrap();
        assert_eq!(v["requires"].as_array().map(|a| a.len()), Some(1), "{v:?}");
        assert!(listens(&i).is_empty());
        // chrony-wait requires chronyd.service, an Alias= of chrony.
        let mut aliases = BTreeMap::new();
        aliases.insert("chronyd.service".to_string(), "chrony".to_string());
        let i = import(
            "chrony-wait.service",
            "[Unit]\nRequires=chronyd.service\nAfter=chronyd.service\n[Service]\nType=oneshot\nExecStart=/usr/bin/chronyc waitsync\n",
            &BTreeMap::new(),
            &aliases,
            &["chrony"],
        );
        assert!(errors(&i).is_empty(), "{:?}", errors(&i));
        let v: toml::Value = toml::from_str(i.toml.as_deref().unwrap()).unwrap();
        assert_eq!(v["requires"][0].as_str(), Some("chrony"), "{v:?}");
    }

    #[test]
    fn stdin_socket_with_one_socket() {
        let mut sockets = BTreeMap::new();
        sockets.insert(
            "acpid.socket".to_string(),
            socket("/l/acpid.socket", "[Unit]\nConditionVirtualization=!container\n[Socket]\nListenStream=/run/acpid.socket\n", false),
        );
        let i = import(
            "acpid.service",
            "[Unit]\nRequires=acpid.socket\n[Service]\nStandardInput=socket\nExecStart=/usr/sbin/acpid\n",
            &sockets,
            &BTreeMap::new(),
            &[],
        );
        assert!(errors(&i).is_empty(), "{:?}", errors(&i));
        let text = i.toml.unwrap();
        let spec =
            crate::unit::toml::parse_unit("acpid", std::path::Path::new("acpid.toml"), &text)
                .expect("valid");
        assert!(spec.stdin_socket);
    }

    #[test]
    fn type_dbus_is_ready_when_its_bus_name_has_an_owner() {
        let i = import(
            "avahi-daemon.service",
            "[Service]\nType=dbus\nBusName=org.freedesktop.Avahi\nExecStart=/usr/sbin/avahi-daemon -s\n",
            &BTreeMap::new(),
            &BTreeMap::new(),
            &[],
        );
        assert!(errors(&i).is_empty(), "{:?}", errors(&i));
        let text = i.toml.unwrap();
        let spec =
            crate::unit::toml::parse_unit("avahi-daemon", std::path::Path::new("a.toml"), &text)
                .expect("valid");
        assert_eq!(spec.ready.kind, crate::unit::ReadyKind::Probe);
        assert!(text.contains("\"string:org.freedesktop.Avahi\""), "{text}");
        let i = import(
            "x.service",
            "[Service]\nType=dbus\nExecStart=/bin/x\n",
            &BTreeMap::new(),
            &BTreeMap::new(),
            &[],
        );
        assert!(
            errors(&i)
                .iter()
                .any(|l| l.contains("Type=: Type=dbus without BusName=")),
            "{:?}",
            errors(&i)
        );
    }
}
