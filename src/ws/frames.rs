//! Where a WebSocket byte stream stands: between two messages, or inside a frame or a
//! fragmented message. [`super::WsStream`] feeds it every byte it reads and writes, so the
//! pool never returns a socket holding part of a message.

/// Follows the WebSocket frames of one direction (RFC 6455 §5.2) to know whether the bytes
/// seen so far end between two messages. Starts inside the HTTP head of the handshake.
#[derive(Debug)]
pub(super) struct Frames {
    /// Bytes of `\r\n\r\n` matched so far while still in the HTTP head; `None` after it.
    head: Option<u8>,
    header: [u8; 14],
    header_len: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A data frame without FIN was seen: a fragmented message is open.
    fragmented: bool,
}

impl Frames {
    pub(super) fn after_http_head() -> Frames {
        Frames {
            head: Some(0),
            header: [0; 14],
            header_len: 0,
            payload_left: 0,
            fragmented: false,
        }
    }

    pub(super) fn at_message_boundary(&self) -> bool {
        self.head.is_none() && self.header_len == 0 && self.payload_left == 0 && !self.fragmented
    }

    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            if let Some(matched) = self.head {
                const END: &[u8; 4] = b"\r\n\r\n";
                bytes = rest;
                self.head = match matched {
                    _ if b == END[matched as usize] && matched == 3 => None,
                    _ if b == END[matched as usize] => Some(matched + 1),
                    _ if b == b'\r' => Some(1),
                    _ => Some(0),
                };
                continue;
            }
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            bytes = rest;
            self.header[self.header_len as usize] = b;
            self.header_len += 1;
            let h = &self.header[..self.header_len as usize];
            if h.len() < 2 {
                continue;
            }
            let len7 = h[1] & 0x7F;
            let extended = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
            if h.len() < 2 + extended + mask {
                continue;
            }
            self.payload_left = match len7 {
                126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                127 => u64::from_be_bytes(h[2..10].try_into().unwrap_or([0xFF; 8])),
                n => u64::from(n),
            };
            // Data frames (opcode < 8) open or close a message; control frames may come
            // between the fragments of one.
            if h[0] & 0x0F < 8 {
                self.fragmented = h[0] & 0x80 == 0;
            }
            self.header_len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    fn fed(chunks: &[&[u8]]) -> Frames {
        let mut f = Frames::after_http_head();
        for c in chunks {
            f.feed(c);
        }
        f
    }

    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

    #[test]
    fn message_boundaries_are_found_across_any_split() {
        let mut wire = HEAD.to_vec();
        wire.extend_from_slice(&[0x81, 5]);
        wire.extend_from_slice(b"hello");
        wire.extend_from_slice(&[0x82, 126, 0x01, 0x00]); // 256-byte binary
        wire.extend_from_slice(&[7; 256]);
        wire.extend_from_slice(&[0x89, 0x80, 1, 2, 3, 4]); // masked empty ping
        wire.extend_from_slice(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]); // 65 536 bytes
        wire.extend_from_slice(&vec![1; 65_536]);
        let ends = [
            HEAD.len(),
            HEAD.len() + 7,
            HEAD.len() + 7 + 260,
            HEAD.len() + 7 + 260 + 6,
            wire.len(),
        ];
        for split in 0..wire.len() {
            let f = fed(&[&wire[..split]]);
            assert_eq!(f.at_message_boundary(), ends.contains(&split), "{split}");
            // The same bytes fed in two pieces end in the same state.
            let g = fed(&[&wire[..split / 2], &wire[split / 2..split]]);
            assert_eq!(g.at_message_boundary(), f.at_message_boundary(), "{split}");
            if split > HEAD.len() + 300 {
                break; // the long payload is skipped by count; its end is checked below
            }
        }
        assert!(fed(&[&wire]).at_message_boundary());
        assert!(!fed(&[&wire[..wire.len() - 1]]).at_message_boundary());
    }

    #[test]
    fn a_fragmented_message_is_open_until_its_final_frame() {
        let mut f = fed(&[HEAD]);
        f.feed(&[0x01, 2, b'a', b'b']); // text, not final
        assert!(!f.at_message_boundary());
        f.feed(&[0x89, 0]); // a ping between fragments
        assert!(!f.at_message_boundary());
        f.feed(&[0x80, 1, b'c']); // final continuation
        assert!(f.at_message_boundary());
    }

    #[test]
    fn the_http_head_ends_at_the_first_blank_line() {
        let f = fed(&[b"HTTP/1.1 101 OK\r\nA: b\r\n\r"]);
        assert!(!f.at_message_boundary());
        let f = fed(&[b"HTTP/1.1 101 OK\r\nA: b\r\r\n\r\n"]);
        assert!(f.at_message_boundary());
    }
}
