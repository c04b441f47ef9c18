//! Writing the generated supd unit: TOML text with a comment on every key
//! saying which systemd directive it came from.
//!
//! Owns: the value model of a generated unit (`Doc`), key order and TOML
//! quoting. Must never: decide a mapping (that is `map`), or emit a key
//! twice (setting a key again replaces it, as a later systemd assignment
//! overrides an earlier one).

use std::fmt::Write;

/// A TOML value the importer emits.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Str(String),
    Int(i64),
    Bool(bool),
    Strs(Vec<String>),
    /// A list of commands, each an argv.
    Cmds(Vec<Vec<String>>),
    /// Integers and strings mixed (exit statuses and signal names).
    Mixed(Vec<V>),
    /// An inline table (`env`, `limits`).
    Map(Vec<(String, V)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: String,
    pub value: V,
    /// Comment lines written above the key (the systemd source).
    pub note: Vec<String>,
}

/// Sections in the order they are written.
pub const SECTIONS: &[&str] = &["", "ready", "restart", "stop", "sandbox"];

/// A generated unit file.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    /// Comment lines at the top.
    pub header: Vec<String>,
    /// (section, items); "" is the top level.
    pub sections: Vec<(String, Vec<Item>)>,
    /// `[[mount]]` tables.
    pub mounts: Vec<Vec<Item>>,
    /// `[[listen]]` tables (sockets of the unit's `.socket` files).
    pub listens: Vec<Vec<Item>>,
    /// Comment lines at the end (what was not honoured).
    pub footer: Vec<String>,
}

impl Doc {
    fn items_mut(&mut self, section: &str) -> &mut Vec<Item> {
        let idx = match self.sections.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        &mut self.sections[idx].1
    }

    /// Set `section.key`, replacing an earlier value.
    pub fn set(&mut self, section: &str, key: &str, value: V, note: impl Into<String>) {
        let note: String = note.into();
        let items = self.items_mut(section);
        let notes = if note.is_empty() { vec![] } else { vec![note] };
        match items.iter_mut().find(|i| i.key == key) {
            Some(i) => {
                i.value = value;
                i.note.extend(notes);
            }
            None => items.push(Item {
                key: key.to_string(),
                value,
                note: notes,
            }),
        }
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&V> {
        self.sections
            .iter()
            .find(|(s, _)| s == section)
            .and_then(|(_, items)| items.iter().find(|i| i.key == key))
            .map(|i| &i.value)
    }

    pub fn remove(&mut self, section: &str, key: &str) {
        if let Some((_, items)) = self.sections.iter_mut().find(|(s, _)| s == section) {
            items.retain(|i| i.key != key);
        }
    }

    /// Append to a list-valued key (strings or commands).
    pub fn push(&mut self, section: &str, key: &str, value: V, note: impl Into<String>) {
        let note: String = note.into();
        let items = self.items_mut(section);
        match items.iter_mut().find(|i| i.key == key) {
            Some(i) => {
                match (&mut i.value, value) {
                    (V::Strs(a), V::Strs(b)) => {
                        for x in b {
                            if !a.contains(&x) {
                                a.push(x);
                            }
                        }
                    }
                    (V::Cmds(a), V::Cmds(b)) => a.extend(b),
                    (V::Mixed(a), V::Mixed(b)) => a.extend(b),
                    (V::Map(a), V::Map(b)) => {
                        for (k, v) in b {
                            a.retain(|(x, _)| *x != k);
                            a.push((k, v));
                        }
                    }
                    (slot, v) => *slot = v,
                }
                if !note.is_empty() && !i.note.contains(&note) {
                    i.note.push(note);
                }
            }
            None => items.push(Item {
                key: key.to_string(),
                value,
                note: if note.is_empty() { vec![] } else { vec![note] },
            }),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for h in &self.header {
            comment(&mut out, h);
        }
        if !self.header.is_empty() {
            out.push('\n');
        }
        // Top-level keys, then [[mount]] tables, then the other tables: a
        // key after a table header would belong to that table.
        if let Some((_, items)) = self.sections.iter().find(|(s, _)| s.is_empty()) {
            for i in items {
                item(&mut out, i);
            }
        }
        for m in &self.mounts {
            out.push_str("\n[[mount]]\n");
            for i in m {
                item(&mut out, i);
            }
        }
        for l in &self.listens {
            out.push_str("\n[[listen]]\n");
            for i in l {
                item(&mut out, i);
            }
        }
        let mut order: Vec<&(String, Vec<Item>)> = self
            .sections
            .iter()
            .filter(|(s, _)| !s.is_empty())
            .collect();
        order.sort_by_key(|(s, _)| SECTIONS.iter().position(|x| x == s).unwrap_or(99));
        for (section, items) in order {
            if items.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n[{section}]");
            for i in items {
                item(&mut out, i);
            }
        }
        if !self.footer.is_empty() {
            out.push('\n');
            for f in &self.footer {
                comment(&mut out, f);
            }
        }
        out
    }
}

fn comment(out: &mut String, text: &str) {
    for l in text.lines() {
        if l.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {l}");
        }
    }
}

fn item(out: &mut String, i: &Item) {
    for n in &i.note {
        comment(out, n);
    }
    let _ = writeln!(out, "{} = {}", i.key, value(&i.value));
}

fn value(v: &V) -> String {
    match v {
        V::Str(s) => quote(s),
        V::Int(n) => n.to_string(),
        V::Bool(b) => b.to_string(),
        V::Strs(list) => format!(
            "[{}]",
            list.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
        ),
        V::Cmds(cmds) => {
            if cmds.len() == 1 {
                format!("[{}]", value(&V::Strs(cmds[0].clone())))
            } else {
                let inner: Vec<String> = cmds
                    .iter()
                    .map(|c| format!("  {},\n", value(&V::Strs(c.clone()))))
                    .collect();
                format!("[\n{}]", inner.concat())
            }
        }
        V::Mixed(list) => format!(
            "[{}]",
            list.iter().map(value).collect::<Vec<_>>().join(", ")
        ),
        V::Map(kv) => format!(
            "{{ {} }}",
            kv.iter()
                .map(|(k, v)| format!("{} = {}", key(k), value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A bare key when TOML allows it, else quoted.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_toml_in_order() {
        let mut d = Doc::default();
        d.header.push("from x.service".into());
        d.set("stop", "timeout", V::Str("90s".into()), "TimeoutStopSec=90");
        d.set(
            "",
            "exec",
            V::Strs(vec!["/bin/x".into(), "a \"b\"\\".into(), "".into()]),
            "ExecStart=...",
        );
        d.push("", "after", V::Strs(vec!["a".into()]), "");
        d.push("", "after", V::Strs(vec!["b".into(), "a".into()]), "");
        d.push(
            "",
            "env",
            V::Map(vec![("A.B".into(), V::Str("1".into()))]),
            "Environment=",
        );
        d.mounts.push(vec![Item {
            key: "path".into(),
            value: V::Str("/srv".into()),
            note: vec![],
        }]);
        d.set(
            "",
            "exec_start_pre",
            V::Cmds(vec![
                vec!["-/bin/a".into()],
                vec!["/bin/b".into(), "x".into()],
            ]),
            "",
        );
        let text = d.render();
        let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(v["exec"][1].as_str(), Some("a \"b\"\\"));
        assert_eq!(v["after"].as_array().map(|a| a.len()), Some(2));
        assert_eq!(v["env"]["A.B"].as_str(), Some("1"));
        assert_eq!(v["mount"][0]["path"].as_str(), Some("/srv"));
        assert_eq!(v["stop"]["timeout"].as_str(), Some("90s"));
        assert_eq!(v["exec_start_pre"][1][1].as_str(), Some("x"));
        assert!(text.starts_with("# from x.service\n"), "{text}");
        assert!(text.contains("# TimeoutStopSec=90\ntimeout"), "{text}");
    }
}
