//! TOML, through `toml_edit`'s spans (the parser `toml` itself uses): the offset of a key path
//! ([`toml_offset`]) and the key path at an offset ([`toml_key_at`]).

use toml_edit::{ImDocument, Item, Table, TableLike, Value};

use super::{past_end, Step};

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
