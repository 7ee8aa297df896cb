//! JSON, through a small scanner, since `serde_json` keeps no positions: the offset of a key
//! path ([`json_offset`]), the key path at an offset ([`json_key_at`]), and the offset of the
//! line and column `serde_json` reports ([`json_offset_at`]).

use super::Step;

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
