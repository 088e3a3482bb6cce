//! The realtime socket's frames (wire-contract A.7): client frames `{type, request_id, payload}`
//! in, server frames `{type, payload, event_id, server_id, timestamp}` out. Parsing reports every
//! malformed frame as a [`FrameError`] whose text the caller sends back in a `chat.error` frame
//! (the socket stays open). A server frame is encoded once by [`encode_frame`] and the same
//! [`Bytes`] go to every recipient.

use bytes::Bytes;

pub(crate) use crate::http::response::write_json_string;
use simd_json::prelude::*;

/// Ids a client sends (`channel_id`) follow the instance-wide id rule.
pub use crate::domain::text::{MAX_ID_CHARS, is_valid_id};
/// Longest `request_id`. It is only echoed back, so it is bounded but not restricted to the id
/// alphabet (clients generate it their own way).
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// One parsed client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    pub request_id: Option<String>,
    pub kind: ClientRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    /// `chat.subscribe {channel_id}`
    Subscribe { channel_id: String },
    /// `chat.unsubscribe {channel_id}`
    Unsubscribe { channel_id: String },
    /// `chat.typing.update {channel_id, is_typing}`
    Typing { channel_id: String, is_typing: bool },
    /// `ping` (also accepted as `chat.ping`); the payload is ignored.
    Ping,
    /// A well-formed frame of a type this server does not know; the caller decides whether
    /// that deserves an answer.
    Unknown { type_: String },
}

/// Why a client frame was refused. The display text is what the client reads in `chat.error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not valid JSON: {0}")]
    Json(String),
    #[error("frame must be a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field `{0}` must be 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`")]
    InvalidId(&'static str),
    #[error("field `request_id` must be 1 to 128 characters without control characters")]
    InvalidRequestId,
}

/// Parses one client text frame. The text is copied once: simd-json parses in place.
pub fn parse_client_frame(text: &[u8]) -> Result<ClientFrame, FrameError> {
    let mut bytes = text.to_vec();
    let value =
        crate::json::to_borrowed_value(&mut bytes).map_err(|e| FrameError::Json(e.to_string()))?;
    if value.as_object().is_none() {
        return Err(FrameError::NotAnObject);
    }
    let type_ = match value.get("type") {
        None => return Err(FrameError::MissingField("type")),
        Some(v) => v.as_str().ok_or(FrameError::WrongType {
            field: "type",
            expected: "a string",
        })?,
    };
    let request_id = match value.get("request_id") {
        None => None,
        Some(v) if v.is_null() => None,
        Some(v) => {
            let id = v.as_str().ok_or(FrameError::WrongType {
                field: "request_id",
                expected: "a string",
            })?;
            let chars = id.chars().count();
            if chars == 0 || chars > MAX_REQUEST_ID_CHARS || id.chars().any(char::is_control) {
                return Err(FrameError::InvalidRequestId);
            }
            Some(id.to_owned())
        }
    };
    let payload = value.get("payload").filter(|p| !p.is_null());
    let kind = match type_ {
        "chat.subscribe" => ClientRequest::Subscribe {
            channel_id: channel_id(payload)?,
        },
        "chat.unsubscribe" => ClientRequest::Unsubscribe {
            channel_id: channel_id(payload)?,
        },
        "chat.typing.update" => {
            let channel_id = channel_id(payload)?;
            let is_typing = match object(payload)?.get("is_typing") {
                None => return Err(FrameError::MissingField("payload.is_typing")),
                Some(v) => v.as_bool().ok_or(FrameError::WrongType {
                    field: "payload.is_typing",
                    expected: "a boolean",
                })?,
            };
            ClientRequest::Typing {
                channel_id,
                is_typing,
            }
        }
        "ping" | "chat.ping" => ClientRequest::Ping,
        other => ClientRequest::Unknown {
            type_: other.to_owned(),
        },
    };
    Ok(ClientFrame { request_id, kind })
}

fn object<'v, 'a>(
    payload: Option<&'v simd_json::BorrowedValue<'a>>,
) -> Result<&'v simd_json::BorrowedValue<'a>, FrameError> {
    let payload = payload.ok_or(FrameError::MissingField("payload"))?;
    if payload.as_object().is_none() {
        return Err(FrameError::WrongType {
            field: "payload",
            expected: "an object",
        });
    }
    Ok(payload)
}

fn channel_id(payload: Option<&simd_json::BorrowedValue<'_>>) -> Result<String, FrameError> {
    let id = match object(payload)?.get("channel_id") {
        None => return Err(FrameError::MissingField("payload.channel_id")),
        Some(v) => v.as_str().ok_or(FrameError::WrongType {
            field: "payload.channel_id",
            expected: "a string",
        })?,
    };
    if !is_valid_id(id) {
        return Err(FrameError::InvalidId("payload.channel_id"));
    }
    Ok(id.to_owned())
}

/// One server frame, `{"type":..,"payload":..,"event_id":..,"server_id":..,"timestamp":..}`.
/// `payload_json` must already be JSON (an empty slice is written as `null`); `timestamp` is an
/// RFC 3339 UTC time (see `domain::views::rfc3339`).
pub fn encode_frame(
    kind: &str,
    payload_json: &[u8],
    event_id: Option<u64>,
    server_id: &str,
    timestamp: &str,
) -> Bytes {
    let mut out = Vec::with_capacity(
        80 + kind.len() + payload_json.len() + server_id.len() + timestamp.len(),
    );
    out.extend_from_slice(b"{\"type\":");
    write_json_string(&mut out, kind);
    out.extend_from_slice(b",\"payload\":");
    if payload_json.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        out.extend_from_slice(payload_json);
    }
    out.extend_from_slice(b",\"event_id\":");
    match event_id {
        Some(id) => out.extend_from_slice(id.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"server_id\":");
    write_json_string(&mut out, server_id);
    out.extend_from_slice(b",\"timestamp\":");
    write_json_string(&mut out, timestamp);
    out.push(b'}');
    Bytes::from(out)
}

/// A `chat.error {message}` frame (no event id: errors are not part of the resumable stream).
pub fn error_frame(message: &str, server_id: &str, timestamp: &str) -> Bytes {
    let mut payload = Vec::with_capacity(16 + message.len());
    payload.extend_from_slice(b"{\"message\":");
    write_json_string(&mut payload, message);
    payload.push(b'}');
    encode_frame("chat.error", &payload, None, server_id, timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        parse_client_frame(text.as_bytes())
    }

    fn json(bytes: &[u8]) -> simd_json::OwnedValue {
        simd_json::to_owned_value(&mut bytes.to_vec()).expect("valid JSON")
    }

    #[test]
    fn parses_the_client_requests_of_the_contract() {
        assert_eq!(
            parse(r#"{"type":"chat.subscribe","request_id":"r1","payload":{"channel_id":"ch_1"}}"#),
            Ok(ClientFrame {
                request_id: Some("r1".into()),
                kind: ClientRequest::Subscribe {
                    channel_id: "ch_1".into()
                }
            })
        );
        assert_eq!(
            parse(r#"{"type":"chat.unsubscribe","payload":{"channel_id":"A-z_9"}}"#)
                .unwrap()
                .kind,
            ClientRequest::Unsubscribe {
                channel_id: "A-z_9".into()
            }
        );
        assert_eq!(
            parse(
                r#"{"type":"chat.typing.update","request_id":null,"payload":{"channel_id":"c","is_typing":true}}"#
            ),
            Ok(ClientFrame {
                request_id: None,
                kind: ClientRequest::Typing {
                    channel_id: "c".into(),
                    is_typing: true
                }
            })
        );
        assert_eq!(
            parse(r#"{"type":"ping"}"#).unwrap().kind,
            ClientRequest::Ping
        );
        assert_eq!(
            parse(r#"{"type":"chat.ping","payload":null}"#)
                .unwrap()
                .kind,
            ClientRequest::Ping
        );
        assert_eq!(
            parse(r#"{"type":"chat.future.thing","payload":[1,2]}"#)
                .unwrap()
                .kind,
            ClientRequest::Unknown {
                type_: "chat.future.thing".into()
            }
        );
    }

    #[test]
    fn refuses_malformed_frames_with_a_reason() {
        assert!(matches!(parse("{\"type\":"), Err(FrameError::Json(_))));
        assert!(matches!(parse(""), Err(FrameError::Json(_))));
        assert_eq!(parse("[1]"), Err(FrameError::NotAnObject));
        assert_eq!(parse("\"x\""), Err(FrameError::NotAnObject));
        assert_eq!(parse("{}"), Err(FrameError::MissingField("type")));
        assert_eq!(
            parse(r#"{"type":7}"#),
            Err(FrameError::WrongType {
                field: "type",
                expected: "a string"
            })
        );
        assert_eq!(
            parse(r#"{"type":"chat.subscribe"}"#),
            Err(FrameError::MissingField("payload"))
        );
        assert_eq!(
            parse(r#"{"type":"chat.subscribe","payload":"ch"}"#),
            Err(FrameError::WrongType {
                field: "payload",
                expected: "an object"
            })
        );
        assert_eq!(
            parse(r#"{"type":"chat.subscribe","payload":{}}"#),
            Err(FrameError::MissingField("payload.channel_id"))
        );
        assert_eq!(
            parse(r#"{"type":"chat.subscribe","payload":{"channel_id":5}}"#),
            Err(FrameError::WrongType {
                field: "payload.channel_id",
                expected: "a string"
            })
        );
        assert_eq!(
            parse(r#"{"type":"chat.typing.update","payload":{"channel_id":"c"}}"#),
            Err(FrameError::MissingField("payload.is_typing"))
        );
        assert_eq!(
            parse(
                r#"{"type":"chat.typing.update","payload":{"channel_id":"c","is_typing":"yes"}}"#
            ),
            Err(FrameError::WrongType {
                field: "payload.is_typing",
                expected: "a boolean"
            })
        );
        assert_eq!(
            parse(r#"{"type":"ping","request_id":5}"#),
            Err(FrameError::WrongType {
                field: "request_id",
                expected: "a string"
            })
        );
        assert_eq!(
            parse(r#"{"type":"ping","request_id":""}"#),
            Err(FrameError::InvalidRequestId)
        );
        assert_eq!(
            parse(r#"{"type":"ping","request_id":"a\nb"}"#),
            Err(FrameError::InvalidRequestId)
        );
        let long = "r".repeat(MAX_REQUEST_ID_CHARS + 1);
        assert_eq!(
            parse(&format!(r#"{{"type":"ping","request_id":"{long}"}}"#)),
            Err(FrameError::InvalidRequestId)
        );
        // The message the client sees names the field.
        assert_eq!(
            FrameError::MissingField("payload.channel_id").to_string(),
            "missing field `payload.channel_id`"
        );
    }

    #[test]
    fn channel_ids_are_checked() {
        for bad in ["", "a b", "ch/1", "é", "a\"b", &"x".repeat(65)] {
            let mut id = Vec::new();
            write_json_string(&mut id, bad);
            let frame = format!(
                r#"{{"type":"chat.subscribe","payload":{{"channel_id":{}}}}}"#,
                String::from_utf8(id).unwrap()
            );
            assert_eq!(
                parse(&frame),
                Err(FrameError::InvalidId("payload.channel_id")),
                "{bad:?}"
            );
        }
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(is_valid_id("0"));
    }

    #[test]
    fn server_frames_have_the_contract_shape() {
        let frame = encode_frame(
            "chat.message.created",
            br#"{"message":{"id":"m1"}}"#,
            Some(42),
            "srv-1",
            "2024-05-01T12:00:00.000Z",
        );
        assert_eq!(
            &frame[..],
            br#"{"type":"chat.message.created","payload":{"message":{"id":"m1"}},"event_id":42,"server_id":"srv-1","timestamp":"2024-05-01T12:00:00.000Z"}"#
        );
        let v = json(&frame);
        assert_eq!(v.get("event_id").and_then(|v| v.as_u64()), Some(42));

        let frame = encode_frame("chat.presence.left", b"", None, "s", "t");
        let v = json(&frame);
        assert!(v.get("event_id").is_some_and(|v| v.is_null()));
        assert!(v.get("payload").is_some_and(|v| v.is_null()));
    }

    #[test]
    fn error_frames_have_the_contract_bytes() {
        assert_eq!(
            &error_frame("bad \"frame\"", "srv-1", "2024-05-01T12:00:00.000Z")[..],
            br#"{"type":"chat.error","payload":{"message":"bad \"frame\""},"event_id":null,"server_id":"srv-1","timestamp":"2024-05-01T12:00:00.000Z"}"#
        );
    }

    #[test]
    fn server_frame_strings_are_escaped() {
        let tricky = "quote\" back\\slash\nnew\ttab\u{1} é ✓ 🎉 </script>";
        let frame = encode_frame(tricky, b"{}", None, tricky, tricky);
        let v = json(&frame);
        for field in ["type", "server_id", "timestamp"] {
            assert_eq!(
                v.get(field).and_then(|v| v.as_str()),
                Some(tricky),
                "{field}"
            );
        }
        assert!(
            std::str::from_utf8(&frame).unwrap().contains("é ✓ 🎉"),
            "non-ASCII stays UTF-8"
        );
        let error = error_frame("bad \"frame\"", "s", "t");
        let v = json(&error);
        assert_eq!(v.get("type").and_then(|v| v.as_str()), Some("chat.error"));
        assert_eq!(
            v.get("payload")
                .and_then(|p| p.get("message"))
                .and_then(|m| m.as_str()),
            Some("bad \"frame\"")
        );
    }

    proptest! {
        /// Any string survives a round trip through a server frame.
        #[test]
        fn escaping_round_trips(s in "\\PC*|[\\x00-\\x1f\"\\\\]*") {
            let frame = encode_frame(&s, b"{}", Some(1), &s, &s);
            let v = json(&frame);
            prop_assert_eq!(v.get("type").and_then(|v| v.as_str()), Some(s.as_str()));
            prop_assert_eq!(v.get("server_id").and_then(|v| v.as_str()), Some(s.as_str()));
        }

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_client_frame(&bytes);
        }
    }
}
