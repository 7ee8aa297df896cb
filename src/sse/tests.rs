//! The SSE parser: each rule of the WHATWG standard, the standard's own examples, streams
//! recorded from LiteLLM and Gradio, the limits, and a property test that the way a stream
//! is split into reads never changes its events (checked against a second, independent
//! reading of the rules).

use std::io::{self, BufRead, Read};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// All events of `text`, read whole.
fn parse(text: &[u8]) -> Vec<Event> {
    Events::new(text)
        .collect::<Result<_, _>>()
        .expect("no error")
}

/// (type, data, id) of each event.
fn short(events: &[Event]) -> Vec<(&str, &str, &str)> {
    events
        .iter()
        .map(|e| (e.event.as_str(), e.data.as_str(), e.id.as_str()))
        .collect()
}

fn types_and_data(text: &[u8]) -> Vec<(String, String)> {
    parse(text).into_iter().map(|e| (e.event, e.data)).collect()
}

/// Asserts the (type, data) of each event of `text`.
fn expect(text: &[u8], want: &[(&str, &str)]) {
    let want: Vec<_> = want
        .iter()
        .map(|(e, d)| (e.to_string(), d.to_string()))
        .collect();
    assert_eq!(
        types_and_data(text),
        want,
        "{:?}",
        String::from_utf8_lossy(text)
    );
}

/// A reader that hands out `data` in reads of the given sizes (cycled); a read may also end
/// inside a line ending or a byte order mark.
struct Chunked {
    data: Vec<u8>,
    sizes: Vec<usize>,
    next: usize,
    at: usize,
    chunk_end: usize,
}

impl Chunked {
    fn new(data: &[u8], sizes: &[usize]) -> Chunked {
        Chunked {
            data: data.to_vec(),
            sizes: sizes.iter().map(|&n| n.max(1)).collect(),
            next: 0,
            at: 0,
            chunk_end: 0,
        }
    }
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.fill_buf()?.len().min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Chunked {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at == self.chunk_end {
            let size = self.sizes[self.next % self.sizes.len()];
            self.next += 1;
            self.chunk_end = (self.at + size).min(self.data.len());
        }
        Ok(&self.data[self.at..self.chunk_end])
    }

    fn consume(&mut self, amt: usize) {
        self.at = (self.at + amt).min(self.chunk_end);
    }
}

// ---- the rules, one by one -----------------------------------------------------------------

#[test]
fn fields_event_data_id_retry() {
    let events = parse(b"event: progress\ndata: {\"step\": 1}\nid: 7\nretry: 2500\n\n");
    assert_eq!(
        events,
        [Event {
            event: "progress".into(),
            data: "{\"step\": 1}".into(),
            id: "7".into(),
            retry: Some(Duration::from_millis(2500)),
        }]
    );
}

#[test]
fn data_lines_are_joined_with_line_feeds() {
    expect(
        b"data: YHOO\ndata: +2\ndata: 10\n\n",
        &[("message", "YHOO\n+2\n10")],
    );
    // An empty data line is an empty line of the data.
    expect(b"data: a\ndata:\ndata: b\n\n", &[("message", "a\n\nb")]);
}

#[test]
fn the_type_is_message_when_none_or_empty() {
    expect(
        b"data: 1\n\nevent:\ndata: 2\n\nevent\ndata: 3\n\n",
        &[("message", "1"), ("message", "2"), ("message", "3")],
    );
    // The type does not carry over to the next event.
    expect(
        b"event: a\ndata: 1\n\ndata: 2\n\n",
        &[("a", "1"), ("message", "2")],
    );
}

#[test]
fn a_single_leading_space_is_removed_from_a_value_and_only_one() {
    expect(
        b"data:test\n\ndata: test\n\ndata:  test\n\ndata:\ttest\n\n",
        &[
            ("message", "test"),
            ("message", "test"),
            ("message", " test"),
            ("message", "\ttest"),
        ],
    );
    // Only the first colon splits: the rest belongs to the value.
    expect(b"data: a: b:c\n\n", &[("message", "a: b:c")]);
}

#[test]
fn a_field_without_a_colon_has_an_empty_value() {
    // The standard's example: "data" alone fires an event with empty data; two of them, a
    // single line feed; the last block has no blank line after it and is discarded.
    expect(
        b"data\n\ndata\ndata\n\ndata:",
        &[("message", ""), ("message", "\n")],
    );
    // An `id` without a value resets the last event ID.
    let events = parse(b"id: 1\ndata: a\n\nid\ndata: b\n\n");
    assert_eq!(
        short(&events),
        [("message", "a", "1"), ("message", "b", "")]
    );
}

#[test]
fn the_last_event_id_persists_and_an_id_with_nul_is_ignored() {
    let events = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0x\ndata: c\n\nid: 3\n\ndata: d\n\n");
    assert_eq!(
        short(&events),
        [
            ("message", "a", "1"),
            ("message", "b", "1"),
            ("message", "c", "1"),
            // An id in a block without data is not dispatched, but it is kept.
            ("message", "d", "3"),
        ]
    );
    let mut events = Events::new(&b"id: 9\n\n"[..]);
    assert!(events.next().is_none());
    assert_eq!(events.parser().last_event_id(), "9");
}

#[test]
fn the_standards_four_block_example() {
    let events = parse(
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
    );
    assert_eq!(
        short(&events),
        [
            ("message", "first event", "1"),
            ("message", "second event", ""),
            ("message", " third event", ""),
        ]
    );
}

#[test]
fn retry_takes_ascii_digits_only() {
    let retry = |text: &[u8]| {
        let mut events = Events::new(text);
        let first = events.next().map(|e| e.unwrap().retry);
        (first, events.parser().retry())
    };
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(
        retry(b"retry: 5000\ndata: x\n\n"),
        (Some(ms(5000)), ms(5000))
    );
    for ignored in [
        &b"retry: 50a\ndata: x\n\n"[..],
        b"retry: -5\ndata: x\n\n",
        b"retry: 5.0\ndata: x\n\n",
        b"retry: \ndata: x\n\n",
        b"retry\ndata: x\n\n",
        b"retry:  5\ndata: x\n\n",
        b"retry: \xd9\xa5\ndata: x\n\n", // an Arabic-Indic digit: not ASCII
    ] {
        assert_eq!(retry(ignored), (Some(None), None), "{ignored:?}");
    }
    // Too many digits for any clock: the longest time, no panic.
    let huge = b"retry: 99999999999999999999999999\ndata: x\n\n";
    assert_eq!(retry(huge), (Some(ms(u64::MAX)), ms(u64::MAX)));
    // A retry in a block without data sets the stream's time; no event carries it.
    let mut events = Events::new(&b"retry: 10\n\ndata: x\n\n"[..]);
    assert_eq!(events.next().unwrap().unwrap().retry, None);
    assert_eq!(events.parser().retry(), ms(10));
}

#[test]
fn comments_are_heartbeats_skipped_and_counted() {
    let mut events = Events::new(&b": hi\n:\ndata: a\n: inside an event\ndata: b\n\n:\n"[..]);
    let first = events.next().unwrap().unwrap();
    assert_eq!(first.data, "a\nb");
    assert!(events.next().is_none());
    assert_eq!(events.parser().heartbeats(), 4);
}

#[test]
fn a_blank_line_dispatches_and_a_block_without_data_is_not_dispatched() {
    expect(
        b"event: ping\n\nid: 3\n\nretry: 1\n\n\n\n\ndata: x\n\n",
        &[("message", "x")],
    );
}

#[test]
fn an_event_the_stream_ends_in_is_discarded() {
    assert!(parse(b"data: x").is_empty());
    assert!(parse(b"data: x\n").is_empty());
    assert!(parse(b"data: x\r").is_empty());
    expect(b"data: a\n\ndata: b\n", &[("message", "a")]);
    // After the end, the end again.
    let mut events = Events::new(&b"data: a\n\ndata: b"[..]);
    assert!(events.next().unwrap().is_ok());
    assert!(events.next().is_none() && events.next().is_none());
}

#[test]
fn cr_lf_and_crlf_end_lines_also_mixed() {
    for text in [
        &b"event: a\ndata: 1\ndata: 2\n\ndata: 3\n\n"[..],
        b"event: a\rdata: 1\rdata: 2\r\rdata: 3\r\r",
        b"event: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata: 3\r\n\r\n",
        b"event: a\r\ndata: 1\rdata: 2\n\r\ndata: 3\r\r\n",
    ] {
        expect(text, &[("a", "1\n2"), ("message", "3")]);
    }
    // LF CR is two line endings (a blank line), CR LF one.
    expect(
        b"data: a\n\rdata: b\r\n\r\n",
        &[("message", "a"), ("message", "b")],
    );
}

#[test]
fn a_crlf_split_across_reads_is_one_line_ending() {
    let text = b"data: a\r\n\r\ndata: b\r\n\r\n";
    for size in 1..text.len() {
        let events: Vec<_> = Events::new(Chunked::new(text, &[size]))
            .map(Result::unwrap)
            .map(|e| e.data)
            .collect();
        assert_eq!(events, ["a", "b"], "reads of {size} bytes");
    }
}

#[test]
fn one_leading_byte_order_mark_is_stripped() {
    expect(b"\xEF\xBB\xBFdata: a\n\n", &[("message", "a")]);
    // Only one: a second makes the first field's name "\u{FEFF}data", an unknown field.
    expect(
        b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n",
        &[("message", "b")],
    );
    // Only at the start of the stream.
    expect(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n", &[("message", "a")]);
    // In a value it is kept.
    expect(b"data: \xEF\xBB\xBFb\n\n", &[("message", "\u{FEFF}b")]);
    // A stream that is a byte order mark and a blank line: nothing.
    assert!(parse(b"\xEF\xBB\xBF\n\n").is_empty());
}

#[test]
fn field_names_are_case_sensitive_and_unknown_fields_ignored() {
    expect(
        b"Data: a\nEVENT: b\nfoo: c\ndata : d\n data: e\ndata: f\n\n",
        &[("message", "f")],
    );
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    expect(
        b"event: \xFFx\ndata: caf\xC3\xA9 \xE2\x82\n\n",
        &[("\u{FFFD}x", "caf\u{e9} \u{FFFD}")],
    );
}

// ---- real streams --------------------------------------------------------------------------

/// LiteLLM 1.x, `POST /v1/chat/completions` with `"stream": true` (the proxy of
/// `tests/backends`, recorded; two chunks of six shown whole).
const LITELLM: &str = concat!(
    "data: {\"id\":\"chatcmpl-92085f47\",\"object\":\"chat.completion.chunk\",\"created\":1796181594,",
    "\"model\":\"mock-gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hel\"}}]}\n\n",
    "data: {\"id\":\"chatcmpl-92085f47\",\"object\":\"chat.completion.chunk\",\"created\":1796181594,",
    "\"model\":\"mock-gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

/// Gradio 5.29, `GET /gradio_api/call/generate/{event_id}` (recorded from `tests/backends`'
/// Wan2GP stand-in; the heartbeat is what Gradio sends every 15 s of silence).
const GRADIO: &str = concat!(
    "event: generating\ndata: [{\"step\": 1, \"total\": 2, \"progress\": 0.5, \"prompt\": \"a fox\", \"done\": false}]\n\n",
    "event: heartbeat\ndata: null\n\n",
    "event: generating\ndata: [{\"step\": 2, \"total\": 2, \"progress\": 1.0, \"prompt\": \"a fox\", \"done\": true, \"video\": \"mock_32a33f2a.mp4\"}]\n\n",
    "event: complete\ndata: [{\"step\": 2, \"total\": 2, \"progress\": 1.0, \"prompt\": \"a fox\", \"done\": true, \"video\": \"mock_32a33f2a.mp4\"}]\n\n",
);

#[test]
fn litellm_and_gradio_streams() {
    let events = parse(LITELLM.as_bytes());
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e.event == "message" && e.id.is_empty()));
    let first: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "hel");
    assert_eq!(events[2].data, "[DONE]");

    let events = parse(GRADIO.as_bytes());
    let types: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(types, ["generating", "heartbeat", "generating", "complete"]);
    assert_eq!(events[1].data, "null");
    let done: serde_json::Value = serde_json::from_str(&events[3].data).unwrap();
    assert_eq!(done[0]["video"], "mock_32a33f2a.mp4");
    // Gradio's error for a call with missing inputs.
    expect(b"event: error\ndata: null\n\n", &[("error", "null")]);
}

// ---- limits and errors ---------------------------------------------------------------------

/// A reader that repeats `pattern` forever.
struct Endless {
    pattern: &'static [u8],
    at: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for b in buf.iter_mut() {
            *b = self.pattern[self.at % self.pattern.len()];
            self.at += 1;
        }
        Ok(buf.len())
    }
}

fn endless(pattern: &'static [u8]) -> io::BufReader<Endless> {
    io::BufReader::with_capacity(4096, Endless { pattern, at: 0 })
}

#[test]
fn an_endless_line_or_event_fails_at_the_limit_and_names_it() {
    // What repeats, and how many of its bytes are kept.
    for (pattern, kept) in [
        (&b"data: xxxxxxxxxxxxxxxx"[..], 22),
        (b"data: 0123456789\n", 11),
    ] {
        let mut events = Events::new(endless(pattern)).max_event_bytes(100_000);
        let err = events.next().unwrap().unwrap_err();
        let line = !pattern.contains(&b'\n');
        assert!(
            matches!(
                (&err, line),
                (Error::LineTooLong { limit: 100_000 }, true)
                    | (Error::EventTooLarge { limit: 100_000 }, false)
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("100000 bytes"), "{err}");
        // It stopped once the limit was kept (having read at most a buffer more).
        let read = events.get_ref().get_ref().at;
        assert!(
            read / pattern.len() * kept <= 100_000 + 2 * 4096,
            "{read} bytes read"
        );
        assert!(events.next().is_none(), "fused after an error");
    }
}

#[test]
fn endless_comments_and_unknown_fields_hold_nothing() {
    // They are read, never kept.
    let mut parser = Parser::new().max_event_bytes(64);
    let mut comments = endless(b": ping\nfoo: bar\n").take(100_000);
    assert_eq!(parser.next_event(&mut comments).unwrap(), None);
    assert_eq!(parser.heartbeats(), 100_000 / 16);
}

#[test]
fn the_limit_is_inclusive_and_counts_a_line_within_one_read_too() {
    let line = |n: usize| format!("data: {}\n\n", "x".repeat(n - 6));
    // A line of exactly the limit passes, one byte more fails: within one read, and
    // across reads.
    for reads in [&[1 << 20][..], &[7][..]] {
        let ok = Events::new(Chunked::new(line(64).as_bytes(), reads)).max_event_bytes(64);
        assert_eq!(ok.map(Result::unwrap).count(), 1);
        let mut too_long =
            Events::new(Chunked::new(line(65).as_bytes(), reads)).max_event_bytes(64);
        let err = too_long.next().unwrap().unwrap_err();
        assert!(matches!(err, Error::LineTooLong { limit: 64 }), "{err:?}");
    }
    // The event counts its data with the line feeds between lines.
    let text = b"data: 0123456789\ndata: 0123456789\n\n";
    assert_eq!(Events::new(&text[..]).max_event_bytes(22).count(), 1);
    let mut events = Events::new(&text[..]).max_event_bytes(21);
    assert!(matches!(
        events.next(),
        Some(Err(Error::EventTooLarge { limit: 21 }))
    ));
}

/// A reader that fails as told, then serves `text`.
struct Failing {
    errors: Vec<io::ErrorKind>,
    text: &'static [u8],
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(kind) = self.errors.pop() {
            return Err(kind.into());
        }
        self.text.read(buf)
    }
}

#[test]
fn an_interrupted_read_is_resumed_and_other_errors_end_the_stream() {
    let reader = io::BufReader::new(Failing {
        errors: vec![io::ErrorKind::Interrupted, io::ErrorKind::Interrupted],
        text: b"data: x\n\n",
    });
    assert_eq!(Events::new(reader).map(Result::unwrap).count(), 1);

    let reader = io::BufReader::new(Failing {
        errors: vec![io::ErrorKind::TimedOut],
        text: b"data: x\n\n",
    });
    let mut events = Events::new(reader);
    let err = events.next().unwrap().unwrap_err();
    let Error::Io(io) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(io.kind(), io::ErrorKind::TimedOut);
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(io::Error::from(err).kind(), io::ErrorKind::TimedOut);
    assert!(events.next().is_none(), "fused after an error");

    let limit = io::Error::from(Error::LineTooLong { limit: 1 });
    assert_eq!(limit.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn a_parser_apart_from_its_reader_resumes_where_it_was() {
    // The Python binding's use: the reader is read by other means between events.
    let mut reader = Chunked::new(b"id: 4\ndata: a\n\nraw line\ndata: b\n\n", &[3]);
    let mut parser = Parser::new();
    assert_eq!(parser.next_event(&mut reader).unwrap().unwrap().data, "a");
    let mut raw = String::new();
    reader.read_line(&mut raw).unwrap();
    assert_eq!(raw, "raw line\n");
    let b = parser.next_event(&mut reader).unwrap().unwrap();
    assert_eq!((b.data.as_str(), b.id.as_str()), ("b", "4"));
    assert_eq!(parser.next_event(&mut reader).unwrap(), None);
}

// ---- any split of a stream gives the same events -------------------------------------------

/// The rules read a second way, on the whole text: decoded first, split into lines with the
/// standard's grammar, the last unterminated line dropped. Only for the comparison.
fn reference(bytes: &[u8]) -> (Vec<Event>, Option<Duration>, u64) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['\r', '\n']) {
        lines.push(&rest[..i]);
        let ending = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + ending..];
    }
    let (mut events, mut retry, mut comments) = (Vec::new(), None, 0);
    let (mut kind, mut data, mut id, mut event_retry) =
        (String::new(), String::new(), String::new(), None);
    for line in lines {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                events.push(Event {
                    event: if kind.is_empty() {
                        "message".into()
                    } else {
                        kind.clone()
                    },
                    data: data.clone(),
                    id: id.clone(),
                    retry: event_retry,
                });
            }
            (kind, data, event_retry) = (String::new(), String::new(), None);
        } else if line.starts_with(':') {
            comments += 1;
        } else {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => kind = value.to_string(),
                "data" => data = format!("{data}{value}\n"),
                "id" if !value.contains('\0') => id = value.to_string(),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    let ms = value.parse::<u64>().unwrap_or(u64::MAX);
                    retry = Some(Duration::from_millis(ms));
                    event_retry = retry;
                }
                _ => {}
            }
        }
    }
    (events, retry, comments)
}

/// Streams made of the pieces that matter: field names, colons, spaces, every line ending,
/// byte order marks, NUL, digits, multi-byte and broken UTF-8.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        &b"data"[..],
        b"event",
        b"id",
        b"retry",
        b"Data",
        b":",
        b": ",
        b" ",
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        b"x",
        b"42",
        b"\0",
        b"\xEF\xBB\xBF",
        b"\xC3\xA9",
        b"\xE2\x82",
        b"data: y\n\n",
    ]);
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_into_reads_gives_the_events_the_rules_give(
        text in stream(),
        sizes in prop::collection::vec(1usize..9, 1..8),
    ) {
        let (want, want_retry, want_comments) = reference(&text);
        let whole = Events::new(&text[..]);
        let mut split = Events::new(Chunked::new(&text, &sizes));
        let got: Vec<Event> = split.by_ref().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(whole.map(Result::unwrap).collect::<Vec<_>>(), want);
        prop_assert_eq!(split.parser().retry(), want_retry);
        prop_assert_eq!(split.parser().heartbeats(), want_comments);
    }
}
