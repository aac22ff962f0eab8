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

    mod properties {
        use std::io::{self, Cursor, Read, Write};

        use proptest::prelude::*;
        use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

        use super::*;

        /// A client's bytes to read; what the server writes back is dropped.
        struct Wire(Cursor<Vec<u8>>);

        impl Read for Wire {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.read(buf)
            }
        }

        impl Write for Wire {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        /// The close code the hub sends after reading `bytes` from a client, with
        /// the limits the hub sets on frames.
        fn close_after(bytes: Vec<u8>) -> Option<u16> {
            let config = WebSocketConfig::default()
                .max_message_size(Some(1024))
                .max_frame_size(Some(1024));
            let mut socket =
                WebSocket::from_raw_socket(Wire(Cursor::new(bytes)), Role::Server, Some(config));
            let error = loop {
                if let Err(e) = socket.read() {
                    break e;
                }
            };
            close_for(&axum::Error::new(error)).map(|(code, reason)| {
                assert!(reason.len() <= 123, "{reason}");
                code
            })
        }

        /// One frame on the wire: its first byte (FIN, RSV and opcode) as given,
        /// masked or not, with its payload.
        fn encode(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
            let mut out = vec![first];
            let mask_bit = if masked { 0x80 } else { 0 };
            match payload.len() {
                n @ 0..=125 => out.push(mask_bit | n as u8),
                n => {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
            }
            let key = [0x37, 0xfa, 0x21, 0x3d];
            if masked {
                out.extend_from_slice(&key);
            }
            out.extend(
                payload
                    .iter()
                    .enumerate()
                    .map(|(i, b)| if masked { b ^ key[i % 4] } else { *b }),
            );
            out
        }

        proptest! {
            #![proptest_config(crate::fuzzing::cases(256))]

            /// Whatever frames a client sends, the socket ends in 1002, 1007, 1009 or
            /// nothing (the client went away); a first frame with reserved bits set
            /// or without a mask is a protocol error, 1002.
            #[test]
            fn any_client_frames_close_with_a_code_the_protocol_names(
                frames in proptest::collection::vec((any::<u8>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200)), 1..5),
                junk in proptest::collection::vec(any::<u8>(), 0..32),
            ) {
                let (first, masked, _) = frames[0].clone();
                let mut bytes: Vec<u8> = frames.iter().flat_map(|(f, m, p)| encode(*f, *m, p)).collect();
                bytes.extend(junk);
                let code = close_after(bytes);
                prop_assert!(matches!(code, None | Some(1002 | 1007 | 1009)), "{:?}", code);
                if first & 0x70 != 0 || !masked {
                    prop_assert_eq!(code, Some(1002));
                }
            }

            /// Any bytes at all end the same way.
            #[test]
            fn any_bytes_close_with_a_code_the_protocol_names(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let code = close_after(bytes);
                prop_assert!(matches!(code, None | Some(1002 | 1007 | 1009)), "{:?}", code);
            }
        }
    }
}
