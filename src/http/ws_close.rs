//! The close code a WebSocket client is owed when the socket refuses one of its
//! frames (RFC 6455, sections 5 and 7.4.1): 1002 for a protocol violation, 1007
//! for text that is not UTF-8, 1009 for a message over `ws.max_frame_bytes`.
//!
//! The WebSocket library reports these as typed errors (wrapped in an
//! [`axum::Error`]); the connection then sends the close frame before it ends,
//! instead of dropping the socket and leaving the client to guess why.

use tungstenite::error::{CapacityError, Error, ProtocolError};

/// Close code: the client broke the protocol.
pub(super) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text message (or a close reason) that is not UTF-8.
pub(super) const CLOSE_INVALID_DATA: u16 = 1007;

/// The close code and reason for an error reading from a client, or `None` when
/// there is nobody left to tell (the client went away, the socket failed).
pub(super) fn close_for(error: &axum::Error) -> Option<(u16, &'static str)> {
    let error = std::error::Error::source(error)?.downcast_ref::<Error>()?;
    let protocol = |reason| Some((CLOSE_PROTOCOL_ERROR, reason));
    match error {
        Error::Protocol(violation) => match violation {
            ProtocolError::UnmaskedFrameFromClient => protocol("unmasked frame"),
            ProtocolError::NonZeroReservedBits => protocol("reserved bits set"),
            ProtocolError::InvalidOpcode(_)
            | ProtocolError::UnknownDataFrameType(_)
            | ProtocolError::UnknownControlFrameType(_) => protocol("reserved opcode"),
            ProtocolError::UnexpectedContinueFrame => protocol("continuation of nothing"),
            ProtocolError::ExpectedFragment(_) => protocol("new message inside a fragmented one"),
            ProtocolError::FragmentedControlFrame => protocol("fragmented control frame"),
            ProtocolError::ControlFrameTooBig => protocol("control frame over 125 bytes"),
            ProtocolError::InvalidCloseSequence => protocol("close payload of one byte"),
            // The peer vanished, or the connection is already closing.
            _ => None,
        },
        Error::Utf8(_) => Some((CLOSE_INVALID_DATA, "text is not UTF-8")),
        Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((super::ws::CLOSE_TOO_BIG, "frame too large"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::Data;

    fn close(error: Error) -> Option<u16> {
        close_for(&axum::Error::new(error)).map(|(code, reason)| {
            // A close frame's payload is at most 125 bytes, the code taking two.
            assert!(reason.len() <= 123, "{reason}");
            code
        })
    }

    #[test]
    fn protocol_violations_are_1002() {
        for violation in [
            ProtocolError::UnmaskedFrameFromClient,
            ProtocolError::NonZeroReservedBits,
            ProtocolError::InvalidOpcode(3),
            ProtocolError::UnknownDataFrameType(3),
            ProtocolError::UnknownControlFrameType(11),
            ProtocolError::UnexpectedContinueFrame,
            ProtocolError::ExpectedFragment(Data::Text),
            ProtocolError::FragmentedControlFrame,
            ProtocolError::ControlFrameTooBig,
            ProtocolError::InvalidCloseSequence,
        ] {
            assert_eq!(
                close(Error::Protocol(violation.clone())),
                Some(1002),
                "{violation}"
            );
        }
    }

    #[test]
    fn bad_text_is_1007_and_large_messages_1009() {
        assert_eq!(close(Error::Utf8("invalid".into())), Some(1007));
        let too_long = CapacityError::MessageTooLong {
            size: 2048,
            max_size: 1024,
        };
        assert_eq!(close(Error::Capacity(too_long)), Some(1009));
    }

    #[test]
    fn a_client_that_is_gone_is_told_nothing() {
        assert_eq!(close(Error::ConnectionClosed), None);
        assert_eq!(close(Error::AlreadyClosed), None);
        assert_eq!(
            close(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)),
            None
        );
        assert_eq!(
            close(Error::Io(std::io::ErrorKind::ConnectionReset.into())),
            None
        );
        // An error that is not the WebSocket library's.
        assert_eq!(close_for(&axum::Error::new(std::fmt::Error)), None);
    }
}
