//! Incremental decoder for `Transfer-Encoding: chunked` bodies, shared by the server
//! connection (request bodies) and the blocking client (response bodies).
//!
//! It consumes input as it goes so the caller can drop decoded bytes from its buffer:
//! a body sent as many tiny chunks never needs more than one line of framing buffered.

use std::fmt;

/// Longest chunk-size line (size plus extensions) or trailer line we accept.
const MAX_LINE: usize = 4096;
/// Total trailer bytes we are willing to skip.
const MAX_TRAILERS: usize = 8192;
/// More hex digits than this cannot fit a u64.
const MAX_HEX_DIGITS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkError {
    /// Framing violates the chunked grammar; the message says where.
    Malformed(&'static str),
    /// The decoded body would exceed the caller's limit.
    TooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Malformed(what) => write!(f, "bad chunked encoding: {what}"),
            ChunkError::TooLarge => f.write_str("chunked body too large"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

/// Result of one `decode` call: how much input was used and whether the body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub consumed: usize,
    pub done: bool,
}

enum Line<'a> {
    Complete(&'a [u8], usize),
    Incomplete,
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            trailer_bytes: 0,
        }
    }

    /// The final chunk and its trailers have been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, appending chunk data to `body`.
    /// Bytes after the final CRLF are left unconsumed (they belong to the next message).
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        max_body: usize,
    ) -> Result<Progress, ChunkError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => {
                    return Ok(Progress {
                        consumed: pos,
                        done: true,
                    })
                }
                State::Size => match next_line(rest)? {
                    Line::Incomplete => break,
                    Line::Complete(line, used) => {
                        let size = parse_size(line)?;
                        pos += used;
                        if size == 0 {
                            self.state = State::Trailer;
                        } else {
                            let room = max_body.saturating_sub(body.len()) as u64;
                            if size > room {
                                return Err(ChunkError::TooLarge);
                            }
                            self.state = State::Data(size);
                        }
                    }
                },
                State::Data(left) => {
                    if rest.is_empty() {
                        break;
                    }
                    // `left` fits in usize: it was checked against max_body above.
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    body.extend_from_slice(&rest[..take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|b| *b != b'\r') {
                            return Err(ChunkError::Malformed("missing CRLF after chunk data"));
                        }
                        break;
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ChunkError::Malformed("missing CRLF after chunk data"));
                    }
                    pos += 2;
                    self.state = State::Size;
                }
                State::Trailer => match next_line(rest)? {
                    Line::Incomplete => break,
                    Line::Complete(line, used) => {
                        pos += used;
                        if line.is_empty() {
                            self.state = State::Done;
                        } else {
                            self.trailer_bytes += used;
                            if self.trailer_bytes > MAX_TRAILERS {
                                return Err(ChunkError::Malformed("trailers too long"));
                            }
                            if !line.contains(&b':') {
                                return Err(ChunkError::Malformed("trailer line without ':'"));
                            }
                        }
                    }
                },
            }
        }
        Ok(Progress {
            consumed: pos,
            done: false,
        })
    }
}

/// Finds the next CRLF-terminated line; a bare LF is rejected rather than guessed at.
fn next_line(input: &[u8]) -> Result<Line<'_>, ChunkError> {
    let window = &input[..input.len().min(MAX_LINE + 2)];
    match window.iter().position(|b| *b == b'\n') {
        Some(0) => Err(ChunkError::Malformed("bare LF")),
        Some(lf) if window[lf - 1] != b'\r' => Err(ChunkError::Malformed("bare LF")),
        Some(lf) => Ok(Line::Complete(&window[..lf - 1], lf + 1)),
        None if input.len() > MAX_LINE => Err(ChunkError::Malformed("line too long")),
        None => Ok(Line::Incomplete),
    }
}

/// Parses `hex-size [ws] [; extensions]`; extensions are ignored.
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let size_part = match line.iter().position(|b| *b == b';') {
        Some(semi) => &line[..semi],
        None => line,
    };
    let digits = trim_trailing_ws(size_part);
    if digits.is_empty() || digits.len() > MAX_HEX_DIGITS {
        return Err(ChunkError::Malformed("bad chunk size"));
    }
    let mut size: u64 = 0;
    for b in digits {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(ChunkError::Malformed("bad chunk size")),
        };
        size = (size << 4) | u64::from(d);
    }
    Ok(size)
}

fn trim_trailing_ws(mut s: &[u8]) -> &[u8] {
    while let Some((last, head)) = s.split_last() {
        if *last == b' ' || *last == b'\t' {
            s = head;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], max: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let p = d.decode(input, &mut body, max)?;
        assert!(p.done, "not done after {input:?}");
        Ok((body, p.consumed))
    }

    #[test]
    fn decodes_extensions_and_trailers() {
        let input = b"4;name=value\r\nWiki\r\n5 ; x\r\npedia\r\nA\r\n in chunks\r\n0;last\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\nNEXT";
        let (body, used) = decode_all(input, 1 << 20).unwrap();
        assert_eq!(body, b"Wikipedia in chunks");
        assert_eq!(&input[used..], b"NEXT");
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        let input = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut buf = Vec::new();
        let mut done = false;
        for b in input.iter() {
            assert!(!done);
            buf.push(*b);
            let p = d.decode(&buf, &mut body, 100).unwrap();
            buf.drain(..p.consumed);
            done = p.done;
        }
        assert!(done);
        assert!(buf.is_empty());
        assert_eq!(body, b"abc0123456789abcdef");
    }

    #[test]
    fn rejects_malformed_framing() {
        let cases: [(&[u8], &str); 8] = [
            (b"zz\r\n", "bad chunked encoding: bad chunk size"),
            (b"\r\n", "bad chunked encoding: bad chunk size"),
            (b";ext\r\n", "bad chunked encoding: bad chunk size"),
            (b"-1\r\n", "bad chunked encoding: bad chunk size"),
            (
                b"11111111111111111\r\n",
                "bad chunked encoding: bad chunk size",
            ),
            (
                b"3\r\nabcX\r\n",
                "bad chunked encoding: missing CRLF after chunk data",
            ),
            (b"3\nabc", "bad chunked encoding: bare LF"),
            (
                b"0\r\nnocolon\r\n\r\n",
                "bad chunked encoding: trailer line without ':'",
            ),
        ];
        for (input, msg) in cases {
            let mut body = Vec::new();
            let err = ChunkedDecoder::new()
                .decode(input, &mut body, 1 << 20)
                .unwrap_err();
            assert_eq!(err.to_string(), msg, "input {input:?}");
        }
    }

    #[test]
    fn rejects_overlong_size_line() {
        let mut input = b"1;".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        let mut body = Vec::new();
        let err = ChunkedDecoder::new()
            .decode(&input, &mut body, 100)
            .unwrap_err();
        assert_eq!(err, ChunkError::Malformed("line too long"));
    }

    #[test]
    fn limit_is_checked_before_data_arrives() {
        let mut body = Vec::new();
        let mut d = ChunkedDecoder::new();
        let p = d.decode(b"5\r\nhello\r\n", &mut body, 8).unwrap();
        assert!(!p.done);
        assert_eq!(d.decode(b"4\r\n", &mut body, 8), Err(ChunkError::TooLarge));
        assert_eq!(
            ChunkedDecoder::new().decode(b"ffffffffffffffff\r\n", &mut Vec::new(), 8),
            Err(ChunkError::TooLarge)
        );
    }

    #[test]
    fn exact_limit_is_accepted() {
        let (body, _) = decode_all(b"8\r\n12345678\r\n0\r\n\r\n", 8).unwrap();
        assert_eq!(body, b"12345678");
    }
}
