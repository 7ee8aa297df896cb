//! Finding the line of a key in the configuration text, so errors found after parsing (by
//! validation, or in a preset merge) name it as parse errors do; and the other way round, the
//! key at the place a parse error names, since a parse message names its key but never quotes
//! the source text ([`redact`](super::redact)).
//!
//! TOML through `toml_edit`'s spans (the parser `toml` itself uses); JSON through a small
//! scanner, since `serde_json` keeps no positions. A key the text leaves out (its value came
//! from a default or a preset) is placed at the nearest enclosing table or entry that is
//! there.

use toml_edit::{ImDocument, Item, Table, TableLike, Value};

/// One step of a key path: a table key or an array index.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The byte offset of the deepest step of `path` that `text` (TOML) holds.
pub(crate) fn toml_offset(text: &str, path: &[Step<'_>]) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut node = Node::Table(doc.as_table());
    let mut best = None;
    for step in path {
        let found = match (step, node) {
            (Step::Key(k), Node::Table(t)) => key_in(t, k),
            (Step::Key(k), Node::Item(item)) => item.as_table_like().and_then(|t| key_in(t, k)),
            (Step::Key(k), Node::Value(Value::InlineTable(t))) => key_in(t, k),
            (Step::Index(i), Node::Item(Item::ArrayOfTables(a))) => {
                a.get(*i).map(|t| (t.span(), Node::Table(t)))
            }
            (Step::Index(i), Node::Item(Item::Value(Value::Array(a))))
            | (Step::Index(i), Node::Value(Value::Array(a))) => {
                a.get(*i).map(|v| (v.span(), Node::Value(v)))
            }
            _ => None,
        };
        let Some((span, next)) = found else {
            break;
        };
        best = span.map(|s| s.start).or(best);
        node = next;
    }
    best
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Item(&'a Item),
    Value(&'a Value),
}

/// The span of `key` in `table` (the key itself, or its value's when the key has none) and
/// the node under it.
fn key_in<'a>(
    table: &'a dyn TableLike,
    key: &str,
) -> Option<(Option<std::ops::Range<usize>>, Node<'a>)> {
    let (k, item) = table.get_key_value(key)?;
    Some((k.span().or_else(|| item.span()), Node::Item(item)))
}

/// The byte offset of the deepest step of `path` that `text` (JSON) holds.
pub(crate) fn json_offset(text: &str, path: &[Step<'_>]) -> Option<usize> {
    let mut scan = Scan {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let mut best = None;
    scan.find(path, &mut best);
    best
}

/// A forward scanner over JSON text that `serde_json` has already accepted; it stops (never
/// panics) at anything unexpected.
struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn ws(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.bytes.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// At the value `path` starts in: records where each step is found in `best`.
    fn find(&mut self, path: &[Step<'_>], best: &mut Option<usize>) -> Option<()> {
        let Some((step, rest)) = path.split_first() else {
            return Some(());
        };
        self.ws();
        match step {
            Step::Key(want) => {
                if !self.eat(b'{') {
                    return None;
                }
                loop {
                    self.ws();
                    let start = self.at;
                    let key = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    if key == *want {
                        *best = Some(start);
                        return self.find(rest, best);
                    }
                    self.skip_value()?;
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            Step::Index(want) => {
                if !self.eat(b'[') {
                    return None;
                }
                for _ in 0..*want {
                    self.skip_value()?;
                    if !self.eat(b',') {
                        return None;
                    }
                }
                self.ws();
                *best = Some(self.at);
                self.find(rest, best)
            }
        }
    }

    /// A string at the cursor, decoded.
    fn string(&mut self) -> Option<String> {
        let start = self.at;
        if self.bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        loop {
            match self.bytes.get(self.at)? {
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    break;
                }
                _ => self.at += 1,
            }
        }
        serde_json::from_str(self.text.get(start..self.at)?).ok()
    }

    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.bytes.get(self.at)? {
            b'"' => self.string().map(drop),
            open @ (b'{' | b'[') => {
                let close = if *open == b'{' { b'}' } else { b']' };
                self.at += 1;
                if self.eat(close) {
                    return Some(());
                }
                loop {
                    if *open == b'{' {
                        self.ws();
                        self.string()?;
                        if !self.eat(b':') {
                            return None;
                        }
                    }
                    self.skip_value()?;
                    if self.eat(close) {
                        return Some(());
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            _ => {
                // A number or a literal: up to the next delimiter.
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                {
                    self.at += 1;
                }
                Some(())
            }
        }
    }
}

/// The dotted key path (array indices left out) at byte `offset` of `text` (TOML), for a
/// parse error's message: the deepest key whose key or value holds `offset`.
///
/// For a syntax error (the text does not parse) it is the table the error's line is in and
/// the key that line starts with, and only when the text before that line parses: then the
/// line starts a statement, not the inside of a multi-line string, so what looks like its key
/// is one, never a piece of a value.
pub(crate) fn toml_key_at(text: &str, offset: usize) -> Option<String> {
    let offset = past_end(text, offset);
    if let Ok(doc) = ImDocument::parse(text) {
        let mut path = Vec::new();
        return toml_path_in(doc.as_table(), offset, &mut path).then(|| path.join("."));
    }
    let line_start = text.as_bytes()[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let doc = ImDocument::parse(text.get(..line_start)?).ok()?;
    let mut current = (0, Vec::new());
    last_header(doc.as_table(), &mut Vec::new(), &mut current);
    let mut path = current.1;
    let line = text[line_start..].split('\n').next().unwrap_or("");
    path.extend(line_key(line)?);
    Some(path.join("."))
}

/// Pushes onto `path` the keys down to `offset`; false if no key of `table` holds it.
fn toml_path_in(table: &dyn TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        path.push(name.to_string());
        let inside = match item {
            Item::Table(t) => toml_path_in(t, offset, path),
            Item::ArrayOfTables(a) => a.iter().any(|t| toml_path_in(t, offset, path)),
            Item::Value(v) => value_path_in(v, offset, path),
            Item::None => false,
        };
        let span = |s: Option<std::ops::Range<usize>>| s.map(|s| (s.start, s.end));
        let whole = match (span(key.span()), span(item.span())) {
            (Some((start, _)), Some((_, end))) | (None, Some((start, end))) => Some(start..end),
            (Some((start, end)), None) => Some(start..end),
            (None, None) => None,
        };
        if inside || whole.is_some_and(|w| w.contains(&offset)) {
            return true;
        }
        path.pop();
    }
    false
}

fn value_path_in(value: &Value, offset: usize, path: &mut Vec<String>) -> bool {
    match value {
        Value::InlineTable(t) => toml_path_in(t, offset, path),
        Value::Array(a) => a.iter().any(|v| value_path_in(v, offset, path)),
        _ => false,
    }
}

/// The table whose header comes last in the document (`[a.b]`, `[[service]]`): the one a
/// line after the document belongs to. `best` holds its header's offset and its path.
fn last_header(table: &Table, path: &mut Vec<String>, best: &mut (usize, Vec<String>)) {
    let visit = |t: &Table, path: &mut Vec<String>, best: &mut (usize, Vec<String>)| {
        if let Some(span) = t.span() {
            if !t.is_implicit() && !t.is_dotted() && span.start >= best.0 {
                *best = (span.start, path.clone());
            }
        }
        last_header(t, path, best);
    };
    for (name, item) in table.iter() {
        path.push(name.to_string());
        match item {
            Item::Table(t) => visit(t, path, best),
            Item::ArrayOfTables(a) => a.iter().for_each(|t| visit(t, path, best)),
            _ => {}
        }
        path.pop();
    }
}

/// The key a `key = value` line starts with (`a.b`, `"X-Key"`), when it is followed by `=`;
/// `None` for any other line (a header, a value on its own, a key without `=`).
fn line_key(line: &str) -> Option<Vec<String>> {
    let blank = |s: &str| s.trim_start_matches([' ', '\t']).len();
    let mut rest = line.trim_start_matches([' ', '\t']);
    let mut keys = Vec::new();
    loop {
        let (key, after) = if let Some(r) = rest.strip_prefix('"') {
            let mut escaped = false;
            let end = r.char_indices().find_map(|(i, c)| match c {
                _ if escaped => {
                    escaped = false;
                    None
                }
                '\\' => {
                    escaped = true;
                    None
                }
                '"' => Some(i),
                _ => None,
            })?;
            (&r[..end], &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('\'') {
            let end = r.find('\'')?;
            (&r[..end], &r[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            rest.split_at(end)
        };
        keys.push(key.to_string());
        rest = &after[after.len() - blank(after)..];
        if let Some(r) = rest.strip_prefix('.') {
            rest = &r[r.len() - blank(r)..];
            continue;
        }
        return rest.starts_with('=').then_some(keys);
    }
}

/// The dotted key path (array indices left out) at byte `offset` of `text` (JSON, possibly
/// broken after `offset`): the keys of the objects open there. A key counts once its `:` is
/// read, so a string in a key's place that was meant as a value (`{"sk-…"}`) is never named.
pub(crate) fn json_key_at(text: &str, offset: usize) -> Option<String> {
    let bytes = text.as_bytes();
    // `serde_json` reports either the byte it stopped at or the last byte it read (the `:`
    // before a value of the wrong type): the byte at `offset` is read too, unless it closes
    // an object or an array (an unexpected `]` is where the error is, still inside).
    let end = offset.saturating_add(1).min(bytes.len());
    // Per open object or array: whether it is an object, its key (confirmed by `:`), and a
    // key read but not yet followed by `:`.
    let mut open: Vec<(bool, Option<String>, Option<String>)> = Vec::new();
    let mut at = 0;
    while at < end {
        match bytes[at] {
            b @ (b'{' | b'[') => open.push((b == b'{', None, None)),
            b'}' | b']' if at + 1 < end => {
                open.pop();
            }
            b',' => {
                if let Some(top) = open.last_mut() {
                    (top.1, top.2) = (None, None);
                }
            }
            b':' => {
                if let Some(top) = open.last_mut() {
                    top.1 = top.2.take();
                }
            }
            b'"' => {
                let start = at;
                at += 1;
                while at < end && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                if at >= end {
                    break; // an unterminated string: a value or a key, not named
                }
                if let Some(top) = open.last_mut() {
                    if top.0 && top.1.is_none() && top.2.is_none() {
                        top.2 = serde_json::from_str(text.get(start..=at)?).ok();
                    }
                }
            }
            _ => {}
        }
        at += 1;
    }
    let path: Vec<&str> = open
        .iter()
        .filter_map(|(_, key, _)| key.as_deref())
        .collect();
    (!path.is_empty()).then(|| path.join("."))
}

/// The byte offset of the 1-based `line` and byte `column` `serde_json` reports.
pub(crate) fn json_offset_at(text: &str, line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        text.bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .nth(line - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    line_start
        .saturating_add(column.saturating_sub(1))
        .min(text.len())
}

/// `offset`, within `text`; the end of a text that ends with a line break is taken as the end
/// of its last line (where the parsers report an unterminated string).
fn past_end(text: &str, offset: usize) -> usize {
    if offset >= text.len() && text.ends_with('\n') {
        text.len() - 1
    } else {
        offset.min(text.len())
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`. The end of a text
/// that ends with a line break is the end of its last line (where an unterminated string
/// is reported).
pub(crate) fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let offset = past_end(text, offset);
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, offset: Option<usize>) -> (u32, u32) {
        line_column(text, offset.expect("found"))
    }

    #[test]
    fn toml_keys_tables_and_missing_keys() {
        let text = "a = 1\n[[service]]\nname = \"x\"\n[[service]]\nname = \"y\"\n[service.http]\nmax = 2\n";
        let path = |p: &[Step<'_>]| at(text, toml_offset(text, p));
        use Step::{Index, Key};
        assert_eq!(path(&[Key("a")]), (1, 1));
        assert_eq!(path(&[Key("service"), Index(1), Key("name")]), (5, 1));
        assert_eq!(
            path(&[Key("service"), Index(1), Key("http"), Key("max")]),
            (7, 1)
        );
        // Missing key: its table. Missing table: the entry.
        assert_eq!(
            path(&[Key("service"), Index(1), Key("http"), Key("nope")]).0,
            6
        );
        assert_eq!(
            path(&[Key("service"), Index(0), Key("http"), Key("max")]).0,
            2
        );
        let inline = "service = [{name = \"x\"}, {name = \"y\", http = {max = 1}}]\n";
        let (line, col) = at(
            inline,
            toml_offset(inline, &[Key("service"), Index(1), Key("http"), Key("max")]),
        );
        assert_eq!((line, col as usize), (1, inline.find("max").unwrap() + 1));
    }

    #[test]
    fn json_keys_indices_and_escapes() {
        use Step::{Index, Key};
        let text = "{\"a\\\"b\": [1, {\"x\": {}}], \"service\": [\n {\"name\": \"é\"},\n {\"http\": {\"max\": 3}}]}";
        let (line, col) = at(
            text,
            json_offset(text, &[Key("service"), Index(1), Key("http"), Key("max")]),
        );
        assert_eq!((line, col), (3, 12));
        assert_eq!(
            at(
                text,
                json_offset(text, &[Key("service"), Index(0), Key("nope")])
            ),
            (2, 2)
        );
        assert_eq!(json_offset("{", &[Key("a")]), None);
        assert_eq!(json_offset("not json", &[Key("a"), Index(3)]), None);
    }

    #[test]
    fn the_key_at_a_place_names_keys_never_values() {
        // TOML that parses: the deepest key holding the offset.
        let text = "[[service]]\nname = \"a\"\n[service.secret_headers]\nX-Key = [1]\n";
        let at = text.find("[1]").unwrap();
        assert_eq!(
            toml_key_at(text, at).as_deref(),
            Some("service.secret_headers.X-Key")
        );
        // A syntax error: the table and the key of the line.
        let text = "[[service]]\n[service.secret_headers]\n\"X-Key\" = \"sk-1\n";
        assert_eq!(
            toml_key_at(text, text.len()).as_deref(),
            Some("service.secret_headers.X-Key")
        );
        // A line inside a multi-line string is not a statement: no key.
        let text = "a = \"\"\"\nsk-1 = 2\n";
        assert_eq!(toml_key_at(text, text.len()), None);
        // A line without `=`: no key (a pasted token is not a key).
        let text = "[s]\nsk-1\n";
        assert_eq!(toml_key_at(text, text.len()), None);
        // JSON: keys count once their `:` is read; strings in arrays never count.
        let key = |text: &str| json_key_at(text, text.len());
        assert_eq!(key(r#"{"a": {"b": ["#).as_deref(), Some("a.b"));
        assert_eq!(key(r#"{"a": {"sk-1"}"#).as_deref(), Some("a"));
        assert_eq!(key(r#"{"a": ["sk-1": 1"#).as_deref(), Some("a"));
        assert_eq!(key(r#"{"a": "sk-1", "#), None);
        assert_eq!(key(r#"{"a": "sk-1"#).as_deref(), Some("a"));
    }
}
