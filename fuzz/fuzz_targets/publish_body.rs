//! Publish bodies: any bytes are turned into events or refused with a 4xx. Events
//! taken name between one and the limit of channels, each granted, none twice; a
//! batch holds at most `limits.max_batch`; JSON data is valid JSON on one line
//! (an SSE frame depends on it).
#![no_main]

use herald::auth::{Credential, Identity};
use herald::config::Limits;
use herald::core::ChannelPattern;
use herald::fuzzing;
use libfuzzer_sys::fuzz_target;

fn identity(patterns: &[&str]) -> Identity {
    Identity {
        publish: patterns
            .iter()
            .map(|p| ChannelPattern::parse(p).expect("a valid pattern"))
            .collect(),
        credential: Credential::ApiKey("fuzz".into()),
        ..Identity::anonymous()
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, body)) = input.split_first() else {
        return;
    };
    let identity = if first & 1 == 0 {
        identity(&["*"])
    } else {
        identity(&["orders:*", "team:1", "$broadcast"])
    };
    let limits = Limits {
        max_batch: 1 + usize::from(first >> 1) % 8,
        max_channels_per_event: 1 + usize::from(first >> 4) % 4,
        max_event_bytes: 1024,
        ..Limits::default()
    };
    match fuzzing::publish_body(body, &identity, &limits) {
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
        Ok((events, batch)) => {
            assert!(!events.is_empty());
            assert!(events.len() <= limits.max_batch);
            assert!(batch || events.len() == 1);
            for event in &events {
                assert!(!event.channels.is_empty());
                assert!(event.channels.len() <= limits.max_channels_per_event);
                for (i, channel) in event.channels.iter().enumerate() {
                    assert!(identity.may_publish(channel), "{channel} is granted");
                    assert!(!event.channels[..i].contains(channel), "{channel} once");
                }
                if event.data.is_json() {
                    let data = event.data.as_bytes();
                    // A JSON reader takes it, unless it nests past that reader's
                    // own limit, holds a number past its range or a lone surrogate
                    // (JSON text allows all three, and the hub passes them on as
                    // written) or the key serde_json keeps for its raw values.
                    if let Err(e) = serde_json::from_slice::<serde_json::Value>(data) {
                        let e = e.to_string();
                        assert!(
                            e.contains("recursion limit")
                                || e.contains("surrogate")
                                || e.contains("hex escape")
                                || e.contains("out of range")
                                || e.contains("raw value"),
                            "{e}"
                        );
                    }
                    assert!(!data.contains(&b'\n') && !data.contains(&b'\r'));
                }
                // What the hub checks next refuses or takes it, never panics.
                let _ = event.validate(&limits.events());
            }
        }
    }
});
