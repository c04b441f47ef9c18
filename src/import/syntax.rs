//! systemd unit-file syntax, read the way systemd reads it.
//!
//! Owns: splitting a unit file (and its drop-ins) into sections and
//! assignments with their file and line; line continuation; the word
//! splitting and C-style unquoting of `ExecStart=`-like and `Environment=`
//! values; command prefixes (`-@:+!`); specifiers (`%i`, `%n`, ...); and
//! systemd's name escaping. Must never: do I/O, or decide what a directive
//! means for supd (that is `map`).
//!
//! Where systemd is lenient (a line without `=`, an assignment outside a
//! section) it warns and ignores; so do we, by returning the problem next
//! to the parsed file instead of failing.

/// One `Key=Value` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// The value with continuation lines joined, not yet unquoted.
    pub value: String,
    /// Index into the sources the file was read from (0 = the unit file,
    /// then its drop-ins in order).
    pub source: usize,
    /// 1-based line where the assignment starts.
    pub line: usize,
}

/// All assignments of one section name, in file order (sections of the same
/// name, in the file or in drop-ins, are merged as systemd merges them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub name: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitFile {
    pub sections: Vec<Section>,
}

impl UnitFile {
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// A line systemd would warn about and skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub source: usize,
    pub line: usize,
    pub message: String,
}

/// Parse one file into `into` (call once per source, unit file first).
pub fn parse_into(text: &str, source: usize, into: &mut UnitFile, problems: &mut Vec<LineProblem>) {
    let mut current: Option<usize> = None;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let line_no = i + 1;
        let mut line = raw.trim().to_string();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        // A trailing backslash joins the next line, the backslash becoming a
        // space; comment lines inside a continuation are skipped.
        while line.ends_with('\\') {
            line.pop();
            line.push(' ');
            let mut next = None;
            for (_, l) in lines.by_ref() {
                let t = l.trim();
                if t.starts_with('#') || t.starts_with(';') {
                    continue;
                }
                next = Some(t.to_string());
                break;
            }
            match next {
                Some(n) => line.push_str(&n),
                None => break,
            }
        }
        let line = line.trim();
        if line.starts_with('[') {
            if !line.ends_with(']') || line.len() < 3 {
                problems.push(LineProblem {
                    source,
                    line: line_no,
                    message: format!("invalid section header {line:?}"),
                });
                current = None;
                continue;
            }
            let name = &line[1..line.len() - 1];
            let idx = match into.sections.iter().position(|s| s.name == name) {
                Some(i) => i,
                None => {
                    into.sections.push(Section {
                        name: name.to_string(),
                        entries: Vec::new(),
                    });
                    into.sections.len() - 1
                }
            };
            current = Some(idx);
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            problems.push(LineProblem {
                source,
                line: line_no,
                message: format!("line without `=`, ignored (as systemd does): {line:?}"),
            });
            continue;
        };
        let Some(idx) = current else {
            problems.push(LineProblem {
                source,
                line: line_no,
                message: "assignment outside of any section, ignored (as systemd does)".into(),
            });
            continue;
        };
        into.sections[idx].entries.push(Entry {
            key: k.trim().to_string(),
            value: v.trim().to_string(),
            source,
            line: line_no,
        });
    }
}

/// Parse a single file (no drop-ins).
pub fn parse(text: &str) -> (UnitFile, Vec<LineProblem>) {
    let mut f = UnitFile::default();
    let mut p = Vec::new();
    parse_into(text, 0, &mut f, &mut p);
    (f, p)
}

/// How `extract_word` treats its input.
#[derive(Clone, Copy)]
struct WordFlags {
    /// A word that is exactly `;` separates commands (ExecStart lists).
    semicolon: bool,
}

/// One word of a value, unquoted and C-unescaped; `Ok(None)` at the end.
/// `quoted_semicolon` tells apart `;` (separator) from `";"` or `\;`.
fn extract_word(s: &mut &str, flags: WordFlags) -> Result<Option<(String, bool)>, String> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace());
    if t.is_empty() {
        *s = t;
        return Ok(None);
    }
    let mut out = String::new();
    let mut literal_semicolon = false;
    let mut chars = t.char_indices().peekable();
    let mut quote: Option<char> = None;
    let mut end = t.len();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_ascii_whitespace() => {
                end = i;
                break;
            }
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                let Some((_, e)) = chars.next() else {
                    return Err("the value ends in a lone backslash".into());
                };
                match e {
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\u{b}'),
                    's' => out.push(' '),
                    '\\' | '"' | '\'' | ' ' => out.push(e),
                    ';' if flags.semicolon => {
                        out.push(';');
                        literal_semicolon = true;
                    }
                    'x' => {
                        let h: String = (0..2)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let v = u8::from_str_radix(&h, 16)
                            .map_err(|_| format!("invalid escape \\x{h}"))?;
                        if v == 0 {
                            return Err("\\x00 (a NUL byte) cannot be passed to a program".into());
                        }
                        out.push(v as char);
                    }
                    'u' | 'U' => {
                        let n = if e == 'u' { 4 } else { 8 };
                        let h: String = (0..n)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let ch = u32::from_str_radix(&h, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .filter(|c| *c != '\0')
                            .ok_or_else(|| format!("invalid escape \\{e}{h}"))?;
                        out.push(ch);
                    }
                    '0'..='7' => {
                        let mut v = e.to_digit(8).unwrap_or(0);
                        for _ in 0..2 {
                            match chars.peek() {
                                Some((_, d)) if d.is_digit(8) => {
                                    v = v * 8 + d.to_digit(8).unwrap_or(0);
                                    chars.next();
                                }
                                _ => break,
                            }
                        }
                        if v == 0 || v > 255 {
                            return Err(format!("invalid octal escape \\{v:o}"));
                        }
                        out.push(v as u8 as char);
                    }
                    other => return Err(format!("unknown escape \\{other}")),
                }
            }
            (_, c) => out.push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("unbalanced {q} quote"));
    }
    *s = &t[end..];
    let separator =
        flags.semicolon && out == ";" && !literal_semicolon && !t.starts_with(['"', '\'']);
    Ok(Some((out, separator)))
}

/// Split a value into unquoted words (as `Environment=` and most list
/// settings are split).
pub fn split_words(value: &str) -> Result<Vec<String>, String> {
    let mut s = value;
    let mut out = Vec::new();
    while let Some((w, _)) = extract_word(&mut s, WordFlags { semicolon: false })? {
        out.push(w);
    }
    Ok(out)
}

/// The prefixes of an `Exec*=` command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecPrefix {
    /// `-`: a failing exit status is recorded but not treated as failure.
    pub ignore_failure: bool,
    /// `@`: the second word is argv[0], the first the program.
    pub argv0: bool,
    /// `:`: no `$VAR` substitution.
    pub no_env_expand: bool,
    /// `+`: full privileges (no User=, no sandboxing).
    pub privileged: bool,
    /// `!` or `!!`: the program changes credentials itself.
    pub no_setuid: bool,
    /// `|`: run through the user's shell.
    pub shell: bool,
}

/// One command of an `Exec*=` line: prefixes, the program and its argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub prefix: ExecPrefix,
    /// The program to run (argv[0] unless `@` gave another).
    pub path: String,
    /// argv, argv[0] included.
    pub argv: Vec<String>,
}

/// Split an `ExecStart=`-style value into its commands (several only when
/// separated by a lone `;`, which systemd still accepts).
pub fn split_exec(value: &str) -> Result<Vec<Command>, String> {
    let mut s = value;
    let mut out = Vec::new();
    let flags = WordFlags { semicolon: true };
    loop {
        // Prefixes are characters at the start of the first word, before
        // any quoting.
        s = s.trim_start();
        if s.is_empty() {
            break;
        }
        let mut prefix = ExecPrefix::default();
        loop {
            let mut cs = s.chars();
            match cs.next() {
                Some('-') => prefix.ignore_failure = true,
                Some('@') => prefix.argv0 = true,
                Some(':') => prefix.no_env_expand = true,
                Some('+') => prefix.privileged = true,
                Some('!') => prefix.no_setuid = true,
                Some('|') => prefix.shell = true,
                _ => break,
            }
            s = cs.as_str();
        }
        let mut words = Vec::new();
        while let Some((w, sep)) = extract_word(&mut s, flags)? {
            if sep {
                break;
            }
            words.push(w);
        }
        if words.is_empty() {
            return Err("an empty command".into());
        }
        let path = words.remove(0);
        if path.is_empty() {
            return Err("the program path is empty".into());
        }
        let argv = if prefix.argv0 {
            if words.is_empty() {
                return Err("`@` needs the program and then its argv[0]".into());
            }
            words
        } else {
            let mut a = vec![path.clone()];
            a.extend(words);
            a
        };
        out.push(Command { prefix, path, argv });
    }
    Ok(out)
}

/// Undo systemd's name escaping (`-` is `/`, `\xNN` a byte), as `%I`, `%P`
/// and mount unit names use it.
pub fn unescape_name(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' => out.push(b'/'),
            b'\\' if i + 3 < b.len() && b[i + 1] == b'x' => {
                match std::str::from_utf8(&b[i + 2..(i + 4).min(b.len())])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                    None => out.push(b'\\'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Facts of the host the import runs on, for the specifiers that name
/// them (`%H`, `%l`, `%m`, `%v`, `%a`). Empty ones are refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Host {
    pub hostname: String,
    pub machine_id: String,
    pub kernel_release: String,
}

/// The unit's own names, for specifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The part before `@` (or the whole stem), e.g. `postgresql`.
    pub prefix: String,
    /// `Some("")` for a template (`foo@.service`), `Some(x)` for an
    /// instance, `None` for a plain unit.
    pub instance: Option<String>,
    /// `service`, `socket`...
    pub suffix: String,
    /// The host, when known.
    pub host: Host,
}

impl Names {
    /// `foo.service`, `foo@.service`, `foo@bar.service`.
    pub fn from_file_name(file_name: &str) -> Option<Names> {
        let (stem, suffix) = file_name.rsplit_once('.')?;
        if stem.is_empty() {
            return None;
        }
        Some(match stem.split_once('@') {
            Some((p, i)) => Names {
                prefix: p.to_string(),
                instance: Some(i.to_string()),
                suffix: suffix.to_string(),
                host: Host::default(),
            },
            None => Names {
                prefix: stem.to_string(),
                instance: None,
                suffix: suffix.to_string(),
                host: Host::default(),
            },
        })
    }

    pub fn is_template(&self) -> bool {
        self.instance.as_deref() == Some("")
    }
}

/// Expand systemd specifiers in `s`.
///
/// For a template the result is in supd's template syntax: `%i` and `%I`
/// stay (supd fills them in per instance) and a literal `%` is written
/// `%%`. Specifiers that name facts of the running host (`%H`, `%m`,
/// `%b`...) are refused: they are not known when importing.
pub fn expand_specifiers(s: &str, names: &Names) -> Result<String, String> {
    let template = names.is_template();
    let pct = if template { "%%" } else { "%" };
    // Within a template, the instance stays a placeholder.
    let (inst, inst_u) = match &names.instance {
        Some(i) if i.is_empty() => ("%i".to_string(), "%I".to_string()),
        Some(i) => (i.clone(), unescape_name(i)),
        None => (String::new(), String::new()),
    };
    let lit = |x: &str| -> String {
        if template {
            x.replace('%', "%%")
        } else {
            x.to_string()
        }
    };
    let prefix = lit(&names.prefix);
    let prefix_u = lit(&unescape_name(&names.prefix));
    let full = match &names.instance {
        Some(_) => format!("{prefix}@{inst}.{}", names.suffix),
        None => format!("{prefix}.{}", names.suffix),
    };
    let stem = match &names.instance {
        Some(_) => format!("{prefix}@{inst}"),
        None => prefix.clone(),
    };
    let mut out = String::with_capacity(s.len());
    let mut cs = s.chars();
    while let Some(c) = cs.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = cs.next() else {
            return Err("a lone `%` at the end (write `%%` for a percent sign)".into());
        };
        let v: String = match spec {
            '%' => pct.to_string(),
            'n' => full.clone(),
            'N' => stem.clone(),
            'p' => prefix.clone(),
            'P' => prefix_u.clone(),
            'i' => inst.clone(),
            'I' => inst_u.clone(),
            'j' => lit(names.prefix.rsplit('-').next().unwrap_or("")),
            'J' => lit(&unescape_name(
                names.prefix.rsplit('-').next().unwrap_or(""),
            )),
            'f' => match &names.instance {
                Some(_) if template => "/%I".to_string(),
                Some(i) => format!("/{}", unescape_name(i).trim_start_matches('/')),
                None => format!("/{}", prefix_u.trim_start_matches('/')),
            },
            // Directories of the system service manager.
            't' => "/run".into(),
            'S' => "/var/lib".into(),
            'C' => "/var/cache".into(),
            'L' => "/var/log".into(),
            'E' => "/etc".into(),
            'T' => "/tmp".into(),
            'V' => "/var/tmp".into(),
            // The system manager's own user.
            'h' => "/root".into(),
            'u' => "root".into(),
            'U' => "0".into(),
            'g' => "root".into(),
            'G' => "0".into(),
            's' => "/bin/sh".into(),
            'a' if cfg!(target_arch = "x86_64") => "x86-64".into(),
            'a' if cfg!(target_arch = "aarch64") => "arm64".into(),
            'H' if !names.host.hostname.is_empty() => lit(&names.host.hostname),
            'l' if !names.host.hostname.is_empty() => {
                lit(names.host.hostname.split('.').next().unwrap_or(""))
            }
            'm' if !names.host.machine_id.is_empty() => lit(&names.host.machine_id),
            'v' if !names.host.kernel_release.is_empty() => lit(&names.host.kernel_release),
            other => {
                return Err(format!(
                    "specifier %{other} names a fact of the host it runs on (or is unknown); supd does not expand it"
                ));
            }
        };
        out.push_str(&v);
    }
    Ok(out)
}

/// Parse a systemd time span (`5`, `5s`, `1min 30s`, `100ms`, `infinity`).
/// `None` means infinity. Bare numbers are seconds.
pub fn parse_timespan(s: &str) -> Result<Option<std::time::Duration>, String> {
    let s = s.trim();
    if s == "infinity" {
        return Ok(None);
    }
    let mut total: u128 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty time span".into());
    }
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() {
            return Err(format!("invalid time span {s:?}"));
        }
        let tail = tail.trim_start();
        let unit_end = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, after) = tail.split_at(unit_end);
        let ns_per: u128 = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1_000_000_000,
            "us" | "usec" | "µs" => 1_000,
            "ms" | "msec" => 1_000_000,
            "m" | "min" | "minute" | "minutes" => 60_000_000_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000_000_000,
            "d" | "day" | "days" => 86_400_000_000_000,
            "w" | "week" | "weeks" => 604_800_000_000_000,
            "ns" | "nsec" => 1,
            "M" | "month" | "months" => 2_629_800_000_000_000,
            "y" | "year" | "years" => 31_557_600_000_000_000,
            other => return Err(format!("unknown time unit {other:?} in {s:?}")),
        };
        let v: f64 = num
            .parse()
            .map_err(|_| format!("invalid number {num:?} in {s:?}"))?;
        total = total.saturating_add((v * ns_per as f64) as u128);
        rest = after;
    }
    let ns = u64::try_from(total).map_err(|_| format!("time span {s:?} is too long"))?;
    Ok(Some(std::time::Duration::from_nanos(ns)))
}

/// systemd's boolean words.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_continuations_comments_and_merging() {
        let text = "# c\n[Unit]\nDescription = A \\\n  # skipped\n  long one\n\n[Service]\nExecStart=/bin/x\nbogus line\n[Unit]\nAfter=b\n";
        let (f, p) = parse(text);
        let u = f.section("Unit").unwrap();
        assert_eq!(u.entries[0].key, "Description");
        assert_eq!(u.entries[0].value, "A  long one");
        assert_eq!(u.entries[0].line, 3);
        assert_eq!(u.entries[1].key, "After");
        assert_eq!(u.entries[1].line, 11);
        assert_eq!(f.section("Service").unwrap().entries[0].value, "/bin/x");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, 9);
        let (_, p) = parse("Key=outside\n");
        assert!(p[0].message.contains("outside"));
    }

    #[test]
    fn exec_quoting_prefixes_and_separators() {
        let c = split_exec(
            r#"-/usr/bin/redis-server /etc/redis.conf --logfile "" --x 'a b' "c\"d" e\x41"#,
        )
        .unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].prefix.ignore_failure);
        assert_eq!(
            c[0].argv,
            [
                "/usr/bin/redis-server",
                "/etc/redis.conf",
                "--logfile",
                "",
                "--x",
                "a b",
                "c\"d",
                "eA"
            ]
        );
        let c = split_exec("@/bin/sh mysh -c 'echo; true' ; +/bin/b x \\; y").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].path, "/bin/sh");
        assert_eq!(c[0].argv, ["mysh", "-c", "echo; true"]);
        assert!(c[1].prefix.privileged);
        assert_eq!(c[1].argv, ["/bin/b", "x", ";", "y"]);
        let c = split_exec("/usr/sbin/nginx -g 'daemon on; master_process on;'").unwrap();
        assert_eq!(c[0].argv[2], "daemon on; master_process on;");
        let c = split_exec("/bin/kill -HUP $MAINPID ${X}y").unwrap();
        assert_eq!(c[0].argv, ["/bin/kill", "-HUP", "$MAINPID", "${X}y"]);
        assert!(split_exec("/bin/x 'open").is_err());
        assert!(split_exec("-").is_err());
        assert_eq!(split_exec("  ").unwrap(), vec![]);
    }

    #[test]
    fn words_for_environment() {
        assert_eq!(
            split_words(r#"A=1 "B=2 3" C='x y'z"#).unwrap(),
            ["A=1", "B=2 3", "C=x yz"]
        );
    }

    #[test]
    fn specifiers_plain_template_and_instance() {
        let plain = Names::from_file_name("redis-server.service").unwrap();
        assert_eq!(
            expand_specifiers("%n %N %p %t/x 100%%", &plain).unwrap(),
            "redis-server.service redis-server redis-server /run/x 100%"
        );
        let tpl = Names::from_file_name("postgresql@.service").unwrap();
        assert!(tpl.is_template());
        assert_eq!(
            expand_specifiers("/etc/postgresql/%I %i %n 5%%", &tpl).unwrap(),
            "/etc/postgresql/%I %i postgresql@%i.service 5%%"
        );
        let inst = Names::from_file_name("postgresql@15-main.service").unwrap();
        assert_eq!(
            expand_specifiers("/etc/postgresql/%I %i %f", &inst).unwrap(),
            "/etc/postgresql/15/main 15-main /15/main"
        );
        assert!(expand_specifiers("%H", &plain).unwrap_err().contains("%H"));
        assert!(expand_specifiers("50%", &plain).is_err());
    }

    #[test]
    fn timespans_and_bools() {
        use std::time::Duration;
        assert_eq!(parse_timespan("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_timespan("1min 30s").unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_timespan("1h").unwrap(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_timespan("250ms").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_timespan("infinity").unwrap(), None);
        assert!(parse_timespan("soon").is_err());
        assert_eq!(parse_bool("yes"), Some(true));
        assert_eq!(parse_bool("Off"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn name_unescaping() {
        assert_eq!(unescape_name("var-lib-pg"), "var/lib/pg");
        assert_eq!(unescape_name("a\\x2db"), "a-b");
    }
}
