//! Finding the line of a key in the configuration text, so errors found after parsing (by
//! validation, or in a preset merge) name it as parse errors do; and the other way round, the
//! key at the place a parse error names, since a parse message names its key but never quotes
//! the source text ([`redact`](super::redact)).
//!
//! TOML through `toml_edit`'s spans (the parser `toml` itself uses), in `toml_text`; JSON
//! through a small scanner, since `serde_json` keeps no positions, in `json_text`. Here: the
//! key path's [`Step`] and the line and column of an offset, which both share. A key the text leaves out (its value came
//! from a default or a preset) is placed at the nearest enclosing table or entry that is
//! there.

mod json_text;
mod toml_text;

pub(crate) use json_text::{json_key_at, json_offset, json_offset_at};
pub(crate) use toml_text::{toml_key_at, toml_offset};

/// One step of a key path: a table key or an array index.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step<'a> {
    Key(&'a str),
    Index(usize),
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
