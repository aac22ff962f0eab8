//! Channel names and grant patterns: a name accepted is exactly the string given and
//! follows the rules; a pattern reads back from its display form; matching agrees
//! with a plain reference implementation.
#![no_main]

use herald::core::{ChannelName, ChannelPattern, channel::MAX_CHANNEL_LEN};
use libfuzzer_sys::fuzz_target;

/// What a pattern covers, read straight from its text.
fn reference_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    // A pattern and a channel, after the first NUL (or the same text twice).
    let (pattern, channel) = text.split_once('\0').unwrap_or((text, text));

    for name in [pattern, channel] {
        if let Ok(c) = ChannelName::new(name) {
            assert_eq!(c.as_str(), name);
            assert!(!name.is_empty() && name.len() <= MAX_CHANNEL_LEN);
            assert!(!name.starts_with('$'));
            assert!(
                !name
                    .chars()
                    .any(|ch| ch.is_control() || ch.is_whitespace() || ch == '*' || ch == ',')
            );
            assert_eq!(c.namespace(), name.split_once(':').map(|(ns, _)| ns));
            if let Some(user) = c.user_id() {
                assert!(!user.is_empty());
                assert_eq!(ChannelName::user(user).ok().as_ref(), Some(&c));
            }
            assert_eq!(ChannelName::from_broker(name).as_ref(), Some(&c));
        }
    }

    if let Ok(p) = ChannelPattern::parse(pattern) {
        assert_eq!(p.to_string(), pattern, "a pattern displays as written");
        assert!(ChannelPattern::parse(&p.to_string()) == Ok(p.clone()));
        assert!(!pattern.trim_end_matches('*').contains('*') || pattern == "*");
        assert_eq!(p.matches(channel), reference_matches(pattern, channel));
        assert_eq!(
            ChannelPattern::any_matches(std::slice::from_ref(&p), channel),
            p.matches(channel)
        );
    }
});
