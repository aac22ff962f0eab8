//! The query of `/events`, `/ws` and `/poll`: any string is read or refused with a
//! 400, never more channels than the bound; `/poll`'s timeout stays within its cap;
//! and the full request (target, `Last-Event-ID`, `Authorization`, cookie) is read
//! or refused with a 4xx.
#![no_main]

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Uri};
use herald::fuzzing;
use libfuzzer_sys::fuzz_target;

/// `query::SPARE_PARAMETERS`: parameters a stream query may hold past its channels.
const SPARE: usize = 16;

fuzz_target!(|input: &[u8]| {
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let max_channels = usize::from(first % 8);
    // The query, then header values after NUL bytes.
    let mut parts = rest.split(|&b| b == 0);
    let query_bytes = parts.next().unwrap_or_default();
    let Ok(query) = std::str::from_utf8(query_bytes) else {
        return;
    };

    match fuzzing::stream_query(Some(query), max_channels) {
        Ok((channels, _, _, _)) => assert!(channels.len() <= max_channels + SPARE),
        Err(e) => assert_eq!(e.status().as_u16(), 400, "{e:?}"),
    }
    for pair in fuzzing::query_pairs(Some(query)) {
        if let Err(e) = pair {
            assert_eq!(e.status().as_u16(), 400);
        }
    }
    if let Err(e) = fuzzing::query_param(Some(query), "limit") {
        assert_eq!(e.status().as_u16(), 400);
    }
    match fuzzing::poll_timeout(Some(query), max_channels) {
        Ok(timeout) => assert!(timeout <= Duration::from_secs(55)),
        Err(e) => assert_eq!(e.status().as_u16(), 400),
    }

    let Ok(uri) = format!("/events?{query}").parse::<Uri>() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in ["last-event-id", "authorization", "cookie"]
        .iter()
        .zip(parts)
    {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(*name, value);
        }
    }
    match fuzzing::stream_request(&uri, &headers, "herald_token", first & 8 != 0, max_channels) {
        Ok((open, _)) => {
            assert!(open.channels.len() <= max_channels + SPARE);
            if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
                assert_eq!(open.last_event_id.as_deref(), Some(id), "the header wins");
            }
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
});
