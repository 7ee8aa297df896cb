//! [`Message`]: a WebSocket data message as callers send and read it, owned by this crate so a
//! tungstenite release is not a breaking change of ours. Converted to and from tungstenite's
//! type at the guard, the only place the two meet.

use std::fmt;

/// A WebSocket data message: what [`WsGuard`](crate::WsGuard) sends and reads.
///
/// Only the two data kinds of RFC 6455 exist here, and the enum is exhaustive on purpose: a
/// `match` over `Text` and `Binary` is complete. Control frames are the pool's business, not
/// the caller's: pings are answered and pongs skipped while reading, the pool pings idle
/// sockets itself, and a close frame from the peer ends the lease with
/// [`Error::WebSocketClosed`](crate::Error::WebSocketClosed).
///
/// ```
/// use backend_pool::Message;
///
/// let m = Message::text("hello");
/// assert_eq!(m.as_text(), Some("hello"));
/// assert_eq!(m.as_bytes(), b"hello");
/// match Message::binary(vec![1u8, 2]) {
///     Message::Text(text) => println!("{text}"),
///     Message::Binary(bytes) => assert_eq!(bytes, [1, 2]),
/// }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// A text message (UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(bytes: impl Into<Vec<u8>>) -> Message {
        Message::Binary(bytes.into())
    }

    /// The text of a text message; `None` for a binary one.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    /// The text of a text message; `None` for a binary one.
    pub fn into_text(self) -> Option<String> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    /// The payload, of either kind (a text message's UTF-8 bytes).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// The payload, of either kind.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Message::Text(text) => text.into_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wire type: moves the payload, copies nothing.
    pub(super) fn into_wire(self) -> tungstenite::Message {
        match self {
            Message::Text(text) => tungstenite::Message::Text(text.into()),
            Message::Binary(bytes) => tungstenite::Message::Binary(bytes.into()),
        }
    }

    /// A data message read from the wire; `None` for a control frame.
    pub(super) fn from_wire(message: tungstenite::Message) -> Option<Message> {
        match message {
            tungstenite::Message::Text(text) => Some(Message::Text(text.as_str().to_owned())),
            tungstenite::Message::Binary(bytes) => Some(Message::Binary(bytes.into())),
            _ => None,
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Message {
        Message::Text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Message {
        Message::Text(text.to_owned())
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Message {
        Message::Binary(bytes)
    }
}

impl From<&[u8]> for Message {
    fn from(bytes: &[u8]) -> Message {
        Message::Binary(bytes.to_vec())
    }
}

/// Text in full; binary as its length (a payload may be megabytes of image).
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(text) => f.debug_tuple("Text").field(text).finish(),
            Message::Binary(bytes) => write!(f, "Binary({} bytes)", bytes.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Message;

    #[test]
    fn the_wire_conversion_keeps_kind_and_payload() {
        for m in [
            Message::text("é ✓"),
            Message::binary(vec![0u8, 255]),
            Message::Text(String::new()),
            Message::Binary(Vec::new()),
        ] {
            assert_eq!(Message::from_wire(m.clone().into_wire()), Some(m));
        }
        let ping = tungstenite::Message::Ping(Default::default());
        assert_eq!(Message::from_wire(ping), None);
        let close = tungstenite::Message::Close(None);
        assert_eq!(Message::from_wire(close), None);
    }

    #[test]
    fn debug_does_not_dump_binary_payloads() {
        assert_eq!(
            format!("{:?}", Message::binary(vec![0; 3])),
            "Binary(3 bytes)"
        );
        assert_eq!(format!("{:?}", Message::text("hi")), "Text(\"hi\")");
    }
}
