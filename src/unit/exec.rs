//! How a command line and its environment are put together, as systemd
//! does it: `$VAR`/`${VAR}` substitution in argv and the EnvironmentFile
//! syntax.
//!
//! Owns: the two pure transformations the spawner applies before it
//! creates a process. Must never: read files or the process environment
//! (the spawner passes the text and the assembled environment in).

/// Is `name` a valid environment variable name?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn lookup<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Replace `${NAME}` (also `${NAME:-default}` and `${NAME:+alternative}`)
/// and `$$` (a literal `$`) in one word. `$NAME` inside a word stays as
/// written, as systemd leaves it.
fn expand_word(word: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            let inner = &body[..end];
            let (name, op) = match inner.find(":-").or_else(|| inner.find(":+")) {
                Some(j) => (&inner[..j], Some((&inner[j..j + 2], &inner[j + 2..]))),
                None => (inner, None),
            };
            if valid_name(name) {
                let v = lookup(env, name).filter(|v| !v.is_empty());
                match op {
                    None => out.push_str(v.unwrap_or("")),
                    Some((":-", default)) => out.push_str(v.unwrap_or(default)),
                    Some((_, alt)) => {
                        if v.is_some() {
                            out.push_str(alt)
                        }
                    }
                }
            } else {
                out.push_str("${");
                out.push_str(inner);
                out.push('}');
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// systemd's substitution in a command line: an argument that is exactly
/// `$NAME` becomes the variable's value split at whitespace (zero or more
/// arguments); `${NAME}` anywhere is replaced by the value as is (within
/// one argument); `$$` is a literal `$`. Unset variables are empty.
pub fn expand_argv(argv: &[String], env: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    for (i, a) in argv.iter().enumerate() {
        if i > 0
            && let Some(name) = a.strip_prefix('$')
            && valid_name(name)
        {
            if let Some(v) = lookup(env, name) {
                out.extend(v.split_whitespace().map(str::to_string));
            }
            continue;
        }
        out.push(expand_word(a, env));
    }
    out
}

/// Parse an EnvironmentFile: `NAME=value` lines, `#`/`;` comments, single
/// quotes (literal), double quotes (backslash escapes `"`, `\`, `` ` ``,
/// `$` and newline), backslash escapes and continuations outside quotes,
/// and `${NAME}` references to variables defined before (in `before`, then
/// earlier in the file). Returns the assignments and, for each line
/// ignored, why (systemd also ignores such lines).
pub fn parse_env_file(
    text: &str,
    before: &[(String, String)],
) -> (Vec<(String, String)>, Vec<String>) {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut warnings = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line_no = 1usize;
    loop {
        // Skip blank space and comment lines.
        while let Some(&c) = chars.peek() {
            if c == '\n' {
                line_no += 1;
                chars.next();
            } else if c.is_whitespace() {
                chars.next();
            } else if c == '#' || c == ';' {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line_no += 1;
                        break;
                    }
                }
            } else {
                break;
            }
        }
        if chars.peek().is_none() {
            break;
        }
        let start_line = line_no;
        let mut key = String::new();
        let mut saw_eq = false;
        while let Some(&c) = chars.peek() {
            if c == '=' {
                chars.next();
                saw_eq = true;
                break;
            }
            if c == '\n' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let key = key.trim().to_string();
        let mut value = String::new();
        // Unquoted text waits here: `${NAME}` in it is expanded, and its
        // trailing whitespace dropped at the end of the line.
        let mut unquoted = String::new();
        let mut leading = true;
        let flush = |value: &mut String, unquoted: &mut String, out: &[(String, String)]| {
            if !unquoted.is_empty() {
                value.push_str(&expand_word(unquoted, &merged(before, out)));
                unquoted.clear();
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '\n' => {
                    line_no += 1;
                    break;
                }
                c if leading && c.is_whitespace() => continue,
                '\'' => {
                    leading = false;
                    flush(&mut value, &mut unquoted, &out);
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                        if c == '\n' {
                            line_no += 1;
                        }
                        value.push(c);
                    }
                }
                '"' => {
                    leading = false;
                    flush(&mut value, &mut unquoted, &out);
                    let mut quoted = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => match chars.next() {
                                Some('$') => quoted.push_str("$$"),
                                Some(n @ ('"' | '\\' | '`')) => quoted.push(n),
                                Some('\n') => line_no += 1,
                                Some(n) => {
                                    quoted.push('\\');
                                    quoted.push(n);
                                }
                                None => {}
                            },
                            '\n' => {
                                line_no += 1;
                                quoted.push('\n');
                            }
                            '$' if chars.peek() != Some(&'{') => quoted.push_str("$$"),
                            c => quoted.push(c),
                        }
                    }
                    value.push_str(&expand_word(&quoted, &merged(before, &out)));
                }
                '$' if chars.peek() != Some(&'{') => {
                    leading = false;
                    unquoted.push_str("$$");
                }
                '\\' => {
                    leading = false;
                    match chars.next() {
                        Some('\n') => line_no += 1,
                        Some('$') => unquoted.push_str("$$"),
                        Some(n) => unquoted.push(n),
                        None => {}
                    }
                }
                c => {
                    leading = false;
                    unquoted.push(c);
                }
            }
        }
        let kept = unquoted.trim_end().len();
        unquoted.truncate(kept);
        flush(&mut value, &mut unquoted, &out);
        if !saw_eq || !valid_name(&key) {
            warnings.push(format!(
                "line {start_line}: not NAME=VALUE ({key:?}); ignored"
            ));
            continue;
        }
        out.retain(|(k, _)| *k != key);
        out.push((key, value));
    }
    (out, warnings)
}

fn merged(a: &[(String, String)], b: &[(String, String)]) -> Vec<(String, String)> {
    a.iter().chain(b.iter()).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_expansion_follows_systemd() {
        let e = env(&[("OPTS", "-a  -b c"), ("MAINPID", "42"), ("EMPTY", "")]);
        assert_eq!(
            expand_argv(
                &argv(&[
                    "/bin/x",
                    "$OPTS",
                    "--pid=${MAINPID}",
                    "$UNSET",
                    "${UNSET}",
                    "a$OPTS",
                    "$$HOME",
                    "$EMPTY"
                ]),
                &e
            ),
            argv(&["/bin/x", "-a", "-b", "c", "--pid=42", "", "a$OPTS", "$HOME"])
        );
        assert_eq!(
            expand_argv(
                &argv(&["/bin/x", "${UNSET:-dflt}", "${OPTS:+set}", "${bad name}"]),
                &e
            ),
            argv(&["/bin/x", "dflt", "set", "${bad name}"])
        );
        // The program itself is never split.
        assert_eq!(expand_argv(&argv(&["$OPTS"]), &e), argv(&["$OPTS"]));
    }

    #[test]
    fn env_file_syntax() {
        let text = "# comment\n; also\nA=1\n B = two words  \nC='single $A'\nD=\"double \\\"q\\\" ${A}\"\nE=x\\\ny\nexport F=1\nnonsense\nG=${A}${B}\nA=again\n";
        let (kv, warn) = parse_env_file(text, &env(&[]));
        let get = |k: &str| kv.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("again"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("single $A"));
        assert_eq!(get("D"), Some("double \"q\" 1"));
        assert_eq!(get("E"), Some("xy"));
        assert_eq!(get("G"), Some("1two words"));
        assert_eq!(warn.len(), 2, "{warn:?}");
        assert!(warn[0].contains("line 9"), "{warn:?}");
        let (kv, _) = parse_env_file("X=${BASE}/sub\n", &env(&[("BASE", "/srv")]));
        assert_eq!(kv, env(&[("X", "/srv/sub")]));
    }
}
