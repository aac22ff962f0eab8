//! A connection's first request head, read and checked before anything serves it.
//!
//! The HTTP server answers a head it cannot read with a bare status (or not at
//! all), and takes a stream request with more bytes after it, which it could never
//! answer. So the head is read here, to its end or to a bound, and checked against
//! everything the HTTP server would refuse: what is wrong is answered with the
//! hub's JSON error ([`check`]), and the HTTP server only ever gets a head it
//! takes.

use std::io;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::http::ApiError;

/// The first read of a request head; a longer head grows the buffer.
const HEAD_READ_BYTES: usize = 1024;

/// The most header lines a request may have (the HTTP server's own limit).
pub(super) const MAX_HEADERS: usize = 100;

/// The most bytes of header lines a request may have, after its request line.
pub(super) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The longest request target the HTTP server takes (it drops a longer one without
/// an answer); a longer one is refused here, with a 414 and a JSON body.
pub(super) const MAX_TARGET_BYTES: usize = u16::MAX as usize - 1;

/// Room for a request target with the method and version around it.
pub(super) const MAX_REQUEST_LINE: usize = MAX_TARGET_BYTES + 32;

/// The largest head there can be: the longest request line and header lines.
pub(super) const MAX_HEAD_BYTES: usize = MAX_REQUEST_LINE + MAX_HEADER_BYTES;

/// Reads into `buf` until the end of a request head, a head longer than the limits,
/// or the end of the stream. Cancel-safe: what was read is in `buf`.
pub(super) async fn read(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.reserve(HEAD_READ_BYTES);
    let mut line_end = None;
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len());
        }
        // A line end may have arrived in two reads.
        let from = buf.len().saturating_sub(2);
        if stream.read_buf(buf).await? == 0 {
            return Ok(());
        }
        if line_end.is_none() {
            line_end = buf[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| from + i);
        }
        let limit = line_end.map_or(MAX_REQUEST_LINE, |end| end + 1 + MAX_HEADER_BYTES);
        if buf.len() >= limit || ends_head(&buf[from..]) {
            return Ok(());
        }
    }
}

/// Whether `bytes` hold an empty line: the end of a head (a bare LF ends a line
/// too, as the parser reads it).
fn ends_head(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|i| match bytes.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => bytes.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// A head that the HTTP server takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checked {
    /// Whether it asks for an event stream (`GET /events`; the answer to a `HEAD`
    /// ends, as any other).
    pub(super) stream: bool,
    /// The target and headers of a stream request to serve directly on the socket
    /// ([`super::direct`]): HTTP/1.1, with no body, upgrade or expectation, at most
    /// [`MAX_DIRECT_HEADERS`] headers and no CORS to apply (none configured, or no
    /// `Origin`). `None` sends the request to the router.
    pub(super) direct: Option<(Uri, HeaderMap)>,
}

/// Most headers a directly served stream request may have.
const MAX_DIRECT_HEADERS: usize = 64;

/// What to do with the bytes read by [`read`].
#[derive(Debug)]
pub(super) enum Verdict {
    /// A whole head (and nothing after it, for a stream) that can be served.
    Serve(Checked),
    /// The head breaks the rules: answer with this and close.
    Refuse(ApiError),
    /// The head is not whole yet: the client stopped sending or left.
    Unfinished,
}

/// Checks the bytes read from a new connection: its first request head and
/// whatever came after it. The head is parsed once, here; with `cors` (a CORS
/// policy configured) a stream request with an `Origin` goes to the router.
pub(super) fn check(bytes: &[u8], cors: bool) -> Verdict {
    let line_end = memchr::memchr(b'\n', bytes);
    let line = &bytes[..line_end.unwrap_or(bytes.len())];
    let target_len = line.split(|&b| b == b' ').nth(1).map_or(0, <[u8]>::len);
    if target_len > MAX_TARGET_BYTES || (line_end.is_none() && bytes.len() >= MAX_REQUEST_LINE) {
        return Verdict::Refuse(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is longer than {MAX_TARGET_BYTES} bytes"),
        ));
    }
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            let limit = line_end.map_or(MAX_REQUEST_LINE, |end| end + 1 + MAX_HEADER_BYTES);
            if bytes.len() < limit {
                return Verdict::Unfinished;
            }
            return Verdict::Refuse(too_large(format!(
                "the header lines are longer than {MAX_HEADER_BYTES} bytes"
            )));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Verdict::Refuse(too_large(format!(
                "the request has more than {MAX_HEADERS} header lines"
            )));
        }
        Err(e) => return Verdict::Refuse(malformed(parse_error(e, &request))),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Verdict::Refuse(malformed("the request line is incomplete"));
    };
    let Ok(uri) = Uri::try_from(target) else {
        return Verdict::Refuse(malformed("the request target is not a URI"));
    };
    let body = match body_framing(request.headers, version) {
        Ok(body) => body,
        Err(message) => return Verdict::Refuse(malformed(message)),
    };
    let stream = method == "GET" && uri.path() == "/events";
    if stream && (body || len < bytes.len()) {
        return Verdict::Refuse(ApiError::bad_request(
            "pipelined_request",
            "a stream request must be the last thing sent on its connection: it has no body, \
             and no request can follow a response that never ends",
        ));
    }
    // Only the origin form (`/events?...`) is served directly.
    let direct = (stream && version == 1 && target.starts_with('/'))
        .then(|| direct_headers(request.headers, cors))
        .flatten()
        .map(|headers| (uri, headers));
    Verdict::Serve(Checked { stream, direct })
}

/// The headers of a stream request that can be served directly, or `None`.
fn direct_headers(parsed: &[httparse::Header<'_>], cors: bool) -> Option<HeaderMap> {
    if parsed.len() > MAX_DIRECT_HEADERS {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let refused = matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "upgrade" | "expect"
        ) && !(name == "content-length" && h.value == b"0");
        if refused || (cors && name == "origin") {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(headers)
}

/// Whether the request has a body, from its `Content-Length` and
/// `Transfer-Encoding`; what makes the length of the body unclear (RFC 9112 §6) is
/// an error.
fn body_framing(headers: &[httparse::Header<'_>], version: u8) -> Result<bool, &'static str> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            for part in header.value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                let value = std::str::from_utf8(part)
                    .ok()
                    .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|p| p.parse::<u64>().ok())
                    .ok_or("Content-Length is not a number of bytes")?;
                if length.is_some_and(|l| l != value) {
                    return Err("Content-Length is given twice, with different values");
                }
                length = Some(value);
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if version == 0 {
                return Err("an HTTP/1.0 request cannot have a Transfer-Encoding");
            }
            let last = header.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    match (length, chunked) {
        (Some(_), Some(_)) => Err(
            "both Content-Length and Transfer-Encoding are given, so the length of the body is \
             ambiguous",
        ),
        (_, Some(false)) => Err("the last Transfer-Encoding must be chunked"),
        (_, Some(true)) => Ok(true),
        (length, None) => Ok(length.unwrap_or(0) > 0),
    }
}

/// What is wrong with a head the parser refused, for people.
fn parse_error(error: httparse::Error, request: &httparse::Request<'_, '_>) -> &'static str {
    match error {
        httparse::Error::Token if request.method.is_none() => "the method is not a token",
        httparse::Error::Token => "the request target has a character that is not allowed",
        httparse::Error::HeaderName => {
            "a header line has no colon, or a name with a character that is not allowed"
        }
        httparse::Error::HeaderValue => {
            "a header value has a control character (such as NUL) that is not allowed"
        }
        httparse::Error::NewLine => "a line does not end in CRLF",
        httparse::Error::Version => "the version is not HTTP/1.0 or HTTP/1.1",
        _ => "the request head cannot be read",
    }
}

fn malformed(message: &str) -> ApiError {
    ApiError::bad_request(
        "malformed_request",
        format!("the request head is malformed: {message}"),
    )
}

fn too_large(message: String) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fuzzing::direct_stream;

    fn verdict(head: &[u8]) -> Result<Checked, (u16, String)> {
        match check(head, false) {
            Verdict::Serve(checked) => Ok(checked),
            Verdict::Refuse(error) => Err((error.status().as_u16(), error.message().to_owned())),
            Verdict::Unfinished => Err((0, "unfinished".into())),
        }
    }

    #[test]
    fn only_plain_stream_requests_are_served_directly() {
        let plain =
            b"GET /events?channel=a&token=t HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n";
        let (uri, headers) = direct_stream(plain, false).expect("served directly");
        assert_eq!(uri.query(), Some("channel=a&token=t"));
        assert_eq!(headers["last-event-id"], "7");
        let with_origin = b"GET /events?channel=a HTTP/1.1\r\nOrigin: https://app\r\n\r\n";
        assert!(direct_stream(with_origin, false).is_some());
        assert!(direct_stream(with_origin, true).is_none(), "CORS applies");
        for other in [
            &b"GET http://hub.example/events HTTP/1.1\r\n\r\n"[..],
            b"GET /events HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /events?channel=a HTTP/1.1\r\nHost: x\r\n",
            b"GET /events HTTP/1.0\r\n\r\n",
            b"POST /events HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            b"GET /eventsx HTTP/1.1\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /events HTTP/1.1\r\n\r\nGET /stats HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                direct_stream(other, false).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn request_targets_past_the_http_servers_limit_are_too_long() {
        let head = |target_len: usize| {
            format!(
                "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(target_len - 1)
            )
            .into_bytes()
        };
        assert!(verdict(&head(100)).is_ok());
        assert!(verdict(&head(MAX_TARGET_BYTES)).is_ok());
        assert_eq!(verdict(&head(MAX_TARGET_BYTES + 1)).unwrap_err().0, 414);
        let unfinished = [b"GET /".as_slice(), &vec![b'a'; MAX_REQUEST_LINE]].concat();
        assert_eq!(verdict(&unfinished).unwrap_err().0, 414);
        assert_eq!(
            verdict(&unfinished[..MAX_TARGET_BYTES]).unwrap_err().0,
            0,
            "the client stopped early"
        );
    }

    #[test]
    fn streams_are_told_by_method_and_path() {
        for (head, stream) in [
            (&b"GET /events?channel=a HTTP/1.1\r\n\r\n"[..], true),
            (b"GET /events HTTP/1.1\r\n\r\n", true),
            (b"HEAD /events HTTP/1.1\r\n\r\n", false),
            (
                b"GET http://hub.example/events?channel=a HTTP/1.1\r\n\r\n",
                true,
            ),
            (b"GET /eventsx HTTP/1.1\r\n\r\n", false),
            (b"GET /events/ HTTP/1.1\r\n\r\n", false),
            (
                b"POST /publish HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
                false,
            ),
        ] {
            let text = String::from_utf8_lossy(head);
            assert_eq!(verdict(head).map(|c| c.stream), Ok(stream), "{text}");
        }
    }

    #[test]
    fn nothing_may_follow_a_stream_request() {
        for head in [
            &b"GET /events HTTP/1.1\r\n\r\nGET /stats HTTP/1.1\r\n\r\n"[..],
            b"GET /events HTTP/1.1\r\n\r\nx",
            b"GET /events HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let (status, message) = verdict(head).unwrap_err();
            assert_eq!(status, 400);
            assert!(message.contains("last thing sent"), "{message}");
        }
        assert!(verdict(b"GET /events HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_ok());
        assert!(
            verdict(b"GET /stats HTTP/1.1\r\n\r\nGET /stats HTTP/1.1\r\n\r\n").is_ok(),
            "other requests may be pipelined"
        );
    }

    #[test]
    fn unclear_body_lengths_are_malformed() {
        for (head, says) in [
            (
                &b"POST /p HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                "ambiguous",
            ),
            (
                b"POST /p HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "twice",
            ),
            (b"POST /p HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", "twice"),
            (b"POST /p HTTP/1.1\r\nContent-Length: +1\r\n\r\n", "number"),
            (
                b"POST /p HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "number",
            ),
            (
                b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                "chunked",
            ),
            (
                b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "HTTP/1.0",
            ),
        ] {
            let (status, message) = verdict(head).unwrap_err();
            assert_eq!(status, 400, "{message}");
            assert!(message.contains(says), "{message}");
        }
        assert!(verdict(b"POST /p HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n").is_ok());
        assert!(verdict(b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").is_ok());
    }

    #[test]
    fn heads_that_cannot_be_read_are_refused_saying_why() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let long = format!("x: {}\r\n", "v".repeat(MAX_HEADER_BYTES));
        for (head, status, says) in [
            (
                b"GET / HTTP/1.1\r\nx: a\0b\r\n\r\n".to_vec(),
                400,
                "control character",
            ),
            (
                b"GET / HTTP/1.1\r\nno colon\r\n\r\n".to_vec(),
                400,
                "no colon",
            ),
            (b"G(T / HTTP/1.1\r\n\r\n".to_vec(), 400, "method"),
            (b"GET / HTTP/1.7\r\n\r\n".to_vec(), 400, "version"),
            (b"GET /a\x7fb HTTP/1.1\r\n\r\n".to_vec(), 400, "target"),
            (
                format!("GET / HTTP/1.1\r\n{many}\r\n").into_bytes(),
                431,
                "header lines",
            ),
            (
                format!("GET / HTTP/1.1\r\n{long}").into_bytes(),
                431,
                "longer",
            ),
        ] {
            let (got, message) = verdict(&head).unwrap_err();
            assert_eq!(got, status, "{message}");
            assert!(message.contains(says), "{message}");
        }
        let most: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(verdict(format!("GET / HTTP/1.1\r\n{most}\r\n").as_bytes()).is_ok());
    }

    #[test]
    fn the_end_of_a_head_is_an_empty_line() {
        assert!(ends_head(b"x\r\n\r\n"));
        assert!(ends_head(b"x\n\n"));
        assert!(ends_head(b"x\n\r\n"));
        assert!(!ends_head(b"x\r\ny"));
        assert!(verdict(b"GET / HTTP/1.1\nHost: x\n\n").is_ok());
    }
}
