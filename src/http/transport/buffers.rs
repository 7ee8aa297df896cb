//! [`PoolBuffers`]: a connection's input and output buffers.

use ureq::unversioned::transport::Buffers;

/// Input and output buffers. Allocated on first use at the configured sizes; the input grows
/// (doubling) only when it is full and more is needed, which only a response head does, up to
/// one byte past `max_header_bytes` so ureq can tell a head over the limit; it returns to the
/// configured size once everything in it is consumed.
pub(super) struct PoolBuffers {
    input: Vec<u8>,
    filled: usize,
    consumed: usize,
    output: Vec<u8>,
    input_size: usize,
    output_size: usize,
    input_cap: usize,
    progress: bool,
}

impl PoolBuffers {
    pub(super) fn new(input_size: usize, output_size: usize, max_head: usize) -> PoolBuffers {
        let input_size = input_size.max(1);
        PoolBuffers {
            input: Vec::new(),
            filled: 0,
            consumed: 0,
            output: Vec::new(),
            input_size,
            output_size: output_size.max(1),
            input_cap: input_size.max(max_head.saturating_add(1)),
            progress: false,
        }
    }

    /// Makes `want` bytes free at the end of the input, growing it up to `cap` (never
    /// shrinking below what it holds).
    fn make_room(&mut self, want: usize, cap: usize) {
        if self.input.is_empty() {
            self.input = vec![0; self.input_size];
        }
        if self.consumed > 0 && self.input.len() - self.filled < want {
            self.input.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        let free = self.input.len() - self.filled;
        if free < want && self.input.len() < cap {
            let grown = (self.input.len().saturating_mul(2))
                .max(self.filled + want)
                .min(cap);
            self.input.resize(grown, 0);
        }
    }
}

impl Buffers for PoolBuffers {
    fn output(&mut self) -> &mut [u8] {
        if self.output.len() < self.output_size {
            self.output.resize(self.output_size, 0);
        }
        &mut self.output
    }

    fn input(&self) -> &[u8] {
        &self.input[self.consumed..self.filled]
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        self.make_room(1, self.input_cap);
        &mut self.input[self.filled..]
    }

    fn input_appended(&mut self, amount: usize) {
        self.filled = (self.filled + amount).min(self.input.len());
    }

    fn input_consume(&mut self, amount: usize) {
        self.progress = amount > 0;
        self.consumed = (self.consumed + amount).min(self.filled);
        if self.consumed == self.filled {
            self.consumed = 0;
            self.filled = 0;
            if self.input.len() > self.input_size {
                // A large head has been consumed: give the memory back.
                self.input = Vec::new();
            }
        }
    }

    /// ureq reads a request body into `tmp` (free input space) and frames it into the
    /// output: make at least an output's worth of room.
    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        let want = self.output_size;
        self.make_room(want, self.filled + want);
        if self.output.len() < self.output_size {
            self.output.resize(self.output_size, 0);
        }
        (&mut self.input[self.filled..], &mut self.output)
    }

    fn can_use_input(&self) -> bool {
        self.filled > self.consumed && self.progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(b: &mut PoolBuffers, bytes: &[u8]) -> usize {
        let buf = b.input_append_buf();
        let n = buf.len().min(bytes.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        b.input_appended(n);
        n
    }

    #[test]
    fn the_input_grows_for_a_long_head_up_to_one_past_the_limit_then_shrinks_back() {
        let mut b = PoolBuffers::new(8, 4, 20);
        assert_eq!(append(&mut b, &[1; 8]), 8);
        b.input_consume(0); // a head parser that needs more
        assert_eq!(append(&mut b, &[2; 100]), 8); // doubled to 16
        assert_eq!(append(&mut b, &[3; 100]), 5); // capped at 21
        assert_eq!(b.input().len(), 21);
        assert!(b.input_append_buf().is_empty());
        b.input_consume(21);
        assert_eq!(b.input.capacity(), 0, "not given back");
        assert_eq!(append(&mut b, &[4; 100]), 8);
    }

    #[test]
    fn partly_consumed_input_is_compacted_not_grown_or_truncated() {
        let mut b = PoolBuffers::new(8, 4, 100);
        append(&mut b, b"abcdefgh");
        b.input_consume(6);
        assert_eq!(append(&mut b, b"ijklmn"), 6);
        assert_eq!(b.input(), b"ghijklmn");
        assert_eq!(b.input.len(), 8);
    }

    #[test]
    fn tmp_space_for_a_request_body_is_at_least_one_output_buffer() {
        let mut b = PoolBuffers::new(2, 16, 4);
        let (tmp, out) = b.tmp_and_output();
        assert!(tmp.len() >= 16);
        assert_eq!(out.len(), 16);
    }
}
