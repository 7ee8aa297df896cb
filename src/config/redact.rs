//! Parse errors that carry no value from the text: a configuration holds secrets (bearer
//! tokens, `secret_headers`), and a parse error is where they would leak, because the
//! parsers quote what they read. `toml` prints the offending source line under its message
//! (a `bearer_token` line with a missing quote puts the whole token in the error); serde's
//! type errors echo the value (`invalid type: string "sk-…", expected a map`), in TOML and in
//! JSON alike.
//!
//! So a parse message is rebuilt from the parts that say what is wrong: the parser's own
//! words (never its source excerpt), with every value it quotes taken out (strings, and the
//! numbers, booleans, characters and variant names serde quotes in backticks); the key path
//! (from [`locate`](super::locate)); the line and column (in the error's location). Key names
//! stay: `unknown field `api_key``, `duplicate key `X-Key``.

/// Words serde puts before a quoted value (`integer `5``, `unknown variant `x``).
const VALUE_WORDS: [&str; 5] = [
    "integer",
    "floating point",
    "boolean",
    "character",
    "variant",
];

/// The parser's `message` (its words only, without a source excerpt) on one line, with every
/// value it quotes removed: `invalid type: string "sk-…", expected a map` becomes
/// `invalid type: string, expected a map`.
pub(crate) fn parser_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // A string value, as serde quotes it (`{:?}`: escapes with `\`). Dropped with the
            // space before it; an unterminated one runs to the end.
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => break,
                        _ => {}
                    }
                }
                trim_space(&mut out);
            }
            // A name or a value in backticks: values are dropped, names (keys, expected
            // tokens) kept.
            '`' => {
                let mut quoted = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '`' {
                        closed = true;
                        break;
                    }
                    quoted.push(c);
                }
                let before = out.trim_end();
                if VALUE_WORDS.iter().any(|w| before.ends_with(w)) || !closed {
                    trim_space(&mut out);
                } else {
                    out.push('`');
                    out.push_str(&quoted);
                    out.push('`');
                }
            }
            // The parsers' messages span lines ("invalid string" / "expected ..."): one line.
            '\n' | '\r' => {
                trim_space(&mut out);
                if !out.is_empty() && !out.ends_with("; ") {
                    out.push_str("; ");
                }
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    out.trim_end_matches([' ', ';']).to_string()
}

fn trim_space(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_names_stay() {
        let cases = [
            (
                "invalid type: string \"sk-1\\\"2`3\", expected a map",
                "invalid type: string, expected a map",
            ),
            (
                "invalid value: integer `-1`, expected u32",
                "invalid value: integer, expected u32",
            ),
            (
                "invalid type: floating point `1.5`, expected u64",
                "invalid type: floating point, expected u64",
            ),
            (
                "invalid type: boolean `true`, expected a string",
                "invalid type: boolean, expected a string",
            ),
            (
                "unknown variant `sk-9`, expected `a` or `b`",
                "unknown variant, expected `a` or `b`",
            ),
            (
                "unknown field `api_key`, expected one of `name`, `url`",
                "unknown field `api_key`, expected one of `name`, `url`",
            ),
            (
                "duplicate key `X-Key` in table `service.secret_headers`",
                "duplicate key `X-Key` in table `service.secret_headers`",
            ),
            (
                "invalid string\nexpected `\"`, `'`",
                "invalid string; expected `\"`, `'`",
            ),
            (
                "invalid type: string \"unterminated",
                "invalid type: string",
            ),
            ("invalid value: character `x", "invalid value: character"),
            ("invalid basic string\n", "invalid basic string"),
        ];
        for (message, want) in cases {
            assert_eq!(parser_message(message), want, "{message}");
        }
    }
}
