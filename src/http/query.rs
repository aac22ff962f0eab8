//! Query strings, read strictly.
//!
//! Every name and value must be UTF-8 once percent-decoded: a lossy decoding would
//! turn `%FF` into U+FFFD and act on a name the client never sent. A parameter
//! that takes one value may not be given twice, since the hub could only guess
//! which one was meant. And a query is bounded before anything in it is looked at:
//! a stream request's channel names are counted as they are read, so a query of a
//! hundred thousand names is refused after `limits.max_channels_per_connection` and
//! a few more, not collected, checked and compared with each other first.

use std::borrow::Cow;

use super::ApiError;

/// Beyond `limits.max_channels_per_connection`, how many more parameters (and
/// channel names) a stream request's query may hold: room for its other
/// parameters (`token`, `last_event_id`, `envelope`, `timeout`, a cache buster)
/// and for a few names given twice.
pub(super) const SPARE_PARAMETERS: usize = 16;

/// The most parameters the query of a request other than a stream may hold.
pub(super) const MAX_PARAMETERS: usize = 64;

/// One decoded `name=value` pair.
pub(super) type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The pairs of `query`, decoded as `application/x-www-form-urlencoded`, in order,
/// each an error (naming the parameter) when it is not UTF-8. Lazy, so that a
/// caller stops at its bound.
pub(super) fn pairs(query: Option<&str>) -> impl Iterator<Item = Result<Pair<'_>, ApiError>> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    "a query parameter's name is not UTF-8 once percent-decoded",
                )
            })?;
            let value = decode(value).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("the query parameter `{name}` is not UTF-8 once percent-decoded"),
                )
                .for_parameter(name.as_ref())
            })?;
            Ok((name, value))
        })
}

/// Percent-decodes one name or value (`+` is a space); `None` when the bytes are
/// not UTF-8. A `%` not followed by two hex digits stands for itself.
fn decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains(['%', '+']) {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Keeps `value` in `slot` for a parameter that takes one value; a second one is
/// a 400 naming it.
pub(super) fn once(
    slot: &mut Option<String>,
    name: &str,
    value: Cow<'_, str>,
) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("the query parameter `{name}` is given more than once"),
        )
        .for_parameter(name));
    }
    *slot = Some(value.into_owned());
    Ok(())
}

/// The parameters of a query other than a stream's: at most [`MAX_PARAMETERS`],
/// each UTF-8.
#[derive(Debug)]
pub(super) struct Params<'a> {
    pairs: Vec<Pair<'a>>,
}

impl<'a> Params<'a> {
    /// Reads `query`.
    pub(super) fn parse(query: Option<&'a str>) -> Result<Self, ApiError> {
        let mut pairs = Vec::new();
        for pair in self::pairs(query) {
            if pairs.len() == MAX_PARAMETERS {
                return Err(ApiError::bad_request(
                    "too_many_parameters",
                    format!("the query holds more than {MAX_PARAMETERS} parameters"),
                ));
            }
            pairs.push(pair?);
        }
        Ok(Self { pairs })
    }

    /// The value of `name`, a parameter that may be given once.
    pub(super) fn one(&self, name: &str) -> Result<Option<String>, ApiError> {
        let mut found = None;
        for (key, value) in &self.pairs {
            if key == name {
                once(&mut found, name, Cow::Borrowed(value))?;
            }
        }
        Ok(found)
    }
}

/// The 400 for a stream request whose query holds more parameters or channel
/// names than `max_channels` (`limits.max_channels_per_connection`) allows, and
/// more than [`SPARE_PARAMETERS`] besides.
pub(super) fn too_many_channels(max_channels: usize) -> ApiError {
    ApiError::bad_request(
        "too_many_channels",
        format!(
            "the query holds more than {} parameters or channel names; at most {max_channels} \
             channels per connection (limits.max_channels_per_connection)",
            max_channels + SPARE_PARAMETERS
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(query: &str) -> Result<Vec<(String, String)>, ApiError> {
        pairs(Some(query))
            .map(|p| p.map(|(k, v)| (k.into_owned(), v.into_owned())))
            .collect()
    }

    #[test]
    fn pairs_are_form_decoded() {
        let got = decoded("a=1&b=x+y%2Cz&&c&d=%e2%82%ac&e=100%&f=%zz").unwrap();
        let want = [
            ("a", "1"),
            ("b", "x y,z"),
            ("c", ""),
            ("d", "€"),
            ("e", "100%"),
            ("f", "%zz"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_by_name() {
        let error = decoded("a=1&channel=%FF").unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        assert!(error.message().contains("`channel`"), "{error:?}");
        assert!(decoded("%C3%28=1").is_err());
        // A lone surrogate, encoded as if it were a character.
        assert!(decoded("a=%ED%A0%80").is_err());
    }

    #[test]
    fn single_parameters_may_not_repeat() {
        let params = Params::parse(Some("limit=1&token=t&limit=2")).unwrap();
        assert_eq!(params.one("token").unwrap().as_deref(), Some("t"));
        assert_eq!(params.one("page").unwrap(), None);
        let error = params.one("limit").unwrap_err();
        assert!(error.message().contains("`limit`"), "{error:?}");
    }

    #[test]
    fn queries_are_bounded() {
        let query = "x=1&".repeat(MAX_PARAMETERS);
        assert!(Params::parse(Some(&query)).is_ok());
        let query = "x=1&".repeat(MAX_PARAMETERS + 1);
        assert!(Params::parse(Some(&query)).is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(crate::fuzzing::cases(256))]

            /// Any names and values, form-encoded as a browser or HTTP client does,
            /// decode to exactly what was encoded.
            #[test]
            fn encoded_pairs_decode_to_what_was_encoded(
                sent in proptest::collection::vec((".{0,12}", ".{0,12}"), 0..8),
            ) {
                let query = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&sent)
                    .finish();
                let got = decoded(&query).expect("UTF-8 pairs");
                prop_assert_eq!(got, sent);
            }

            /// Any query is read or refused with a 400 naming what was wrong, and one
            /// read holds at most the bounded number of parameters.
            #[test]
            fn any_query_is_read_within_bounds_or_refused(
                pieces in proptest::collection::vec(
                    prop_oneof!["%[0-9A-Fa-f]{2}", "[=&+%]", "[a-z]{1,3}", "."],
                    0..200,
                ),
            ) {
                let query = pieces.concat();
                for pair in pairs(Some(&query)) {
                    if let Err(e) = pair {
                        prop_assert_eq!(e.status().as_u16(), 400);
                        prop_assert!(e.message().contains("UTF-8"));
                    }
                }
                match Params::parse(Some(&query)) {
                    Ok(params) => {
                        prop_assert!(params.pairs.len() <= MAX_PARAMETERS);
                        let _ = params.one("limit");
                    }
                    Err(e) => prop_assert_eq!(e.status().as_u16(), 400),
                }
            }
        }
    }
}
