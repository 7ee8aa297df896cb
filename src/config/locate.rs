//! Finding the line of a key in the configuration text, so errors found after parsing (by
//! validation, or in a preset merge) name it as parse errors do.
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

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
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
}
