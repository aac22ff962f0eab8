//! The request-head reader and classifier: arbitrary bytes, arriving in arbitrary
//! pieces, never panic; the head read is a prefix of what was sent, bounded; and a
//! head served directly on the socket is a plain `GET /events` with nothing the
//! direct path cannot handle.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use herald::fuzzing;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// A client that sends `data` in pieces of the given sizes, then closes.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (size, rest) = self
            .sizes
            .split_first()
            .map_or((usize::MAX, &[][..]), |(s, r)| (usize::from(*s).max(1), r));
        self.sizes = rest;
        let n = size.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|input: &[u8]| {
    // The first byte: whether CORS applies and how many piece sizes follow.
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let cors = first & 1 == 1;
    let sizes = usize::from(first >> 1).min(rest.len());
    let (sizes, data) = rest.split_at(sizes);

    let mut client = Pieces { data, sizes };
    let head = fuzzing::read_head(&mut client)
        .now_or_never()
        .expect("an in-memory read never waits")
        .expect("an in-memory read never fails");
    let Some(head) = head else {
        assert!(data.is_empty(), "something was sent");
        return;
    };
    assert!(data.starts_with(&head), "the head is what was sent");
    let (max_head, _) = fuzzing::HEAD_BOUNDS;
    // One read may bring up to a piece (at most 255 bytes) or the buffer's spare room
    // past the bound.
    assert!(head.len() <= max_head * 2 + 255);

    for bytes in [&head[..], data] {
        let verdict = fuzzing::check_head(bytes);
        if let fuzzing::HeadVerdict::Refuse { status } = verdict {
            assert!((400..500).contains(&status), "{status}");
        }
        // The server asks for a direct stream only of a head it serves.
        let served = matches!(verdict, fuzzing::HeadVerdict::Serve { .. });
        if let Some((uri, headers)) = fuzzing::direct_stream(bytes, cors).filter(|_| served) {
            assert_eq!(uri.path(), "/events");
            assert_eq!(
                verdict,
                fuzzing::HeadVerdict::Serve { stream: true },
                "a direct stream is a stream request"
            );
            assert!(bytes.ends_with(b"\n\r\n") || bytes.ends_with(b"\n\n"));
            for refused in ["transfer-encoding", "upgrade", "expect"] {
                assert!(!headers.contains_key(refused), "{refused}");
            }
            if let Some(length) = headers.get("content-length") {
                assert_eq!(length, "0");
            }
            if cors {
                assert!(!headers.contains_key("origin"));
            }
        }
    }
});
