//! The request-head reader and classifier, reached from `herald::fuzzing`.

use std::io;

use axum::http::{HeaderMap, Uri};
use tokio::io::AsyncRead;

use super::head::{self, Verdict};

/// See `herald::fuzzing::read_head`.
pub(crate) async fn read_head(
    stream: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    head::read(stream, &mut buf).await?;
    Ok((!buf.is_empty()).then_some(buf))
}

/// What the server does with the bytes of a connection's first request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadVerdict {
    /// It serves the request; `stream` when it asks for an event stream.
    Serve {
        /// Whether the request asks for an event stream.
        stream: bool,
    },
    /// It answers with this status (a 4xx and the JSON error) and closes.
    Refuse {
        /// The status.
        status: u16,
    },
    /// The head is not whole: the server waits for more (or the client left).
    Unfinished,
}

/// See `herald::fuzzing::check_head`.
pub(crate) fn check_head(bytes: &[u8]) -> HeadVerdict {
    match head::check(bytes, false) {
        Verdict::Serve(checked) => HeadVerdict::Serve {
            stream: checked.stream,
        },
        Verdict::Refuse(error) => HeadVerdict::Refuse {
            status: error.status().as_u16(),
        },
        Verdict::Unfinished => HeadVerdict::Unfinished,
    }
}

/// See `herald::fuzzing::direct_stream`.
pub(crate) fn direct_stream(head: &[u8], cors: bool) -> Option<(Uri, HeaderMap)> {
    match head::check(head, cors) {
        Verdict::Serve(checked) => checked.direct,
        _ => None,
    }
}

/// The bounds [`read_head`] reads within: the longest head there can be, and the
/// longest request line.
pub(crate) const HEAD_BOUNDS: (usize, usize) = (head::MAX_HEAD_BYTES, head::MAX_REQUEST_LINE);

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_util::FutureExt;
    use proptest::prelude::*;
    use tokio::io::ReadBuf;

    use super::*;

    /// A client that sends `data` in pieces of the given sizes, then either closes
    /// or waits, sending nothing more.
    struct Client {
        data: Vec<u8>,
        sizes: Vec<usize>,
        closes: bool,
    }

    impl AsyncRead for Client {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.data.is_empty() && !self.closes {
                return Poll::Pending;
            }
            let size = if self.sizes.is_empty() {
                usize::MAX
            } else {
                self.sizes.remove(0)
            };
            let n = size.max(1).min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    /// Reads a head, `None` when the reader waits for more.
    fn read(data: &[u8], sizes: &[usize], closes: bool) -> Option<Option<Vec<u8>>> {
        let mut client = Client {
            data: data.to_vec(),
            sizes: sizes.to_vec(),
            closes,
        };
        read_head(&mut client)
            .now_or_never()
            .map(|r| r.expect("no error"))
    }

    /// A header name (a token) and a value of visible ASCII and spaces.
    fn header() -> impl Strategy<Value = (String, String)> {
        ("[A-Za-z][A-Za-z0-9-]{0,20}", "[!-~]([ -~]{0,40}[!-~])?").prop_filter(
            "headers the direct path refuses",
            |(name, _)| {
                !matches!(
                    name.to_ascii_lowercase().as_str(),
                    "content-length" | "transfer-encoding" | "upgrade" | "expect" | "origin"
                )
            },
        )
    }

    proptest! {
        #![proptest_config(crate::fuzzing::cases(256))]

        /// Whatever a client sends, in whatever pieces, what is read as its head is
        /// a prefix of it, bounded.
        #[test]
        fn a_head_is_a_bounded_prefix_of_what_was_sent(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            sizes in proptest::collection::vec(1usize..600, 0..8),
        ) {
            let head = read(&data, &sizes, true).expect("a closed client is not waited for");
            match head {
                None => prop_assert!(data.is_empty()),
                Some(head) => {
                    prop_assert!(data.starts_with(&head));
                    prop_assert!(!head.is_empty());
                }
            }
        }

        /// A whole head, its lines ended by `\r\n` or by bare `\n` (as the HTTP
        /// server takes both), is read whole, without waiting for more; and a plain
        /// `GET /events` is then served directly, with its headers as sent.
        #[test]
        fn a_whole_head_is_read_without_waiting_and_served_as_sent(
            query in "[a-z0-9=&]{0,40}",
            headers in proptest::collection::vec(header(), 0..10),
            bare in any::<bool>(),
            leading in 0usize..2,
            sizes in proptest::collection::vec(1usize..64, 0..8),
        ) {
            let eol = if bare { "\n" } else { "\r\n" };
            // Empty lines before the request line are skipped by HTTP parsers.
            let mut text = eol.repeat(leading);
            text.push_str(&format!("GET /events?{query} HTTP/1.1{eol}"));
            for (name, value) in &headers {
                text.push_str(&format!("{name}: {value}{eol}"));
            }
            text.push_str(eol);
            let head = read(text.as_bytes(), &sizes, false)
                .expect("a whole head is not waited on")
                .expect("a head");
            prop_assert_eq!(&head, text.as_bytes());
            prop_assert_eq!(
                check_head(&head),
                crate::fuzzing::HeadVerdict::Serve { stream: true }
            );
            let (uri, parsed) = direct_stream(&head, true).expect("served directly");
            prop_assert_eq!(uri.path(), "/events");
            prop_assert_eq!(uri.query().unwrap_or_default(), query.as_str());
            prop_assert_eq!(parsed.len(), headers.len());
            for (name, value) in &headers {
                prop_assert!(parsed.get_all(name.as_str()).iter().any(|v| v == value.as_str()));
            }
        }

        /// Any bytes are classified without panicking, and what is served directly
        /// is a stream request, complete, with nothing the direct path cannot serve.
        #[test]
        fn any_head_is_classified_and_only_plain_streams_are_served_directly(
            head in proptest::collection::vec(any::<u8>(), 0..512),
            prefix in prop_oneof![Just(&b""[..]), Just(&b"GET /events?"[..]), Just(&b"GET /events HTTP/1.1\r\n"[..])],
            cors in any::<bool>(),
        ) {
            let head = [prefix, &head].concat();
            let verdict = check_head(&head);
            if let crate::fuzzing::HeadVerdict::Refuse { status } = verdict {
                prop_assert!((400..500).contains(&status));
            }
            // The server asks for a direct stream only of a head it serves.
            let served = matches!(verdict, crate::fuzzing::HeadVerdict::Serve { .. });
            if let Some((uri, headers)) = direct_stream(&head, cors).filter(|_| served) {
                prop_assert_eq!(uri.path(), "/events");
                prop_assert_eq!(verdict, crate::fuzzing::HeadVerdict::Serve { stream: true });
                prop_assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"));
                for refused in ["transfer-encoding", "upgrade", "expect"] {
                    prop_assert!(!headers.contains_key(refused));
                }
                prop_assert!(!cors || !headers.contains_key("origin"));
            }
        }
    }
}
