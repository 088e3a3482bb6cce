//! The voice signaling socket's frames (wire contract A.8): client frames
//! `{type, request_id, channel_id, payload}` in, parsed into a [`SignalingFrame`]; server frames
//! `{type, payload}` out ([`frame`]), and `rtc.error` with the `request_id` of the frame that
//! failed ([`error_frame`]).
//!
//! The parser is lenient where the socket is: a field a request needs but lacks stays `None`,
//! since what a missing field means depends on the socket's state (before a join every frame
//! but a good `rtc.join` is refused; after it a malformed candidate is only dropped). That
//! decision is the signaling session's (`api::signaling`), not the parser's.

use bytes::Bytes;
use serde::Serialize;
use simd_json::prelude::*;

use crate::sfu::Direction;

/// Longest `request_id` echoed back; a longer one (or one that is not plain text) is not.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// One client frame: its request and the `request_id` an error about it echoes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalingFrame {
    pub request_id: Option<String>,
    pub request: SignalingRequest,
}

/// One client request of the signaling socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalingRequest {
    /// `rtc.join {ticket}`, with the optional top-level `channel_id` the ticket must match.
    Join {
        ticket: Option<String>,
        channel_id: Option<String>,
    },
    /// `rtc.leave`
    Leave,
    /// `rtc.media.state`: the payload as JSON text, re-encoded for the relay (`None` when the
    /// frame carries no `payload` field; a `null` payload is the text `null`).
    MediaState { payload: Option<String> },
    /// `rtc.offer.publish {sdp}` / `rtc.offer.subscribe {sdp}`
    Offer {
        direction: Direction,
        sdp: Option<String>,
    },
    /// `rtc.ice.candidate {direction, candidate}` (`direction` is `None` when it is neither
    /// `publish` nor `subscribe`).
    Candidate {
        direction: Option<Direction>,
        candidate: Option<String>,
    },
    /// A frame of a type this server does not know (ignored by the socket).
    Unknown { kind: String },
}

impl SignalingRequest {
    /// The frame's `type`, for logs.
    pub fn kind(&self) -> &str {
        match self {
            SignalingRequest::Join { .. } => "rtc.join",
            SignalingRequest::Leave => "rtc.leave",
            SignalingRequest::MediaState { .. } => "rtc.media.state",
            SignalingRequest::Offer {
                direction: Direction::Publish,
                ..
            } => "rtc.offer.publish",
            SignalingRequest::Offer {
                direction: Direction::Subscribe,
                ..
            } => "rtc.offer.subscribe",
            SignalingRequest::Candidate { .. } => "rtc.ice.candidate",
            SignalingRequest::Unknown { kind } => kind,
        }
    }
}

/// Parses one client text frame; `None` for anything that is not a JSON object with a string
/// `type` (too deep included: `crate::json` bounds the nesting).
pub fn parse_signaling_frame(text: String) -> Option<SignalingFrame> {
    let mut bytes = text.into_bytes();
    let value = crate::json::to_owned_value(&mut bytes).ok()?;
    let payload = value.get("payload");
    let text = |field: &str| -> Option<String> { payload?.get(field)?.as_str().map(str::to_owned) };
    let request = match value.get("type")?.as_str()? {
        "rtc.join" => SignalingRequest::Join {
            ticket: text("ticket"),
            channel_id: value
                .get("channel_id")
                .and_then(|c| c.as_str())
                .map(str::to_owned),
        },
        "rtc.leave" => SignalingRequest::Leave,
        "rtc.media.state" => SignalingRequest::MediaState {
            payload: payload.map(|p| simd_json::to_string(p).unwrap_or_default()),
        },
        "rtc.offer.publish" => SignalingRequest::Offer {
            direction: Direction::Publish,
            sdp: text("sdp"),
        },
        "rtc.offer.subscribe" => SignalingRequest::Offer {
            direction: Direction::Subscribe,
            sdp: text("sdp"),
        },
        "rtc.ice.candidate" => SignalingRequest::Candidate {
            direction: text("direction").as_deref().and_then(Direction::parse),
            candidate: text("candidate"),
        },
        other => SignalingRequest::Unknown {
            kind: other.to_owned(),
        },
    };
    let request_id = value
        .get("request_id")
        .and_then(|r| r.as_str())
        .filter(|r| r.chars().count() <= MAX_REQUEST_ID_CHARS && !r.chars().any(char::is_control))
        .map(str::to_owned);
    Some(SignalingFrame {
        request_id,
        request,
    })
}

/// `{"type": kind, "payload": payload}`: the server → client signaling envelope.
pub fn frame<T: Serialize>(kind: &str, payload: &T) -> Bytes {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        #[serde(rename = "type")]
        kind: &'a str,
        payload: &'a T,
    }
    Bytes::from(simd_json::to_vec(&Envelope { kind, payload }).expect("frames serialize"))
}

/// An `rtc.error {code, message, retryable}` frame about the client frame `request_id` named
/// (echoed beside `type`, as the client's envelope has it, and in the payload).
pub fn error_frame(code: &str, message: &str, retryable: bool, request_id: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct Error<'a> {
        code: &'a str,
        message: &'a str,
        retryable: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct Envelope<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
        payload: Error<'a>,
    }
    let envelope = Envelope {
        kind: "rtc.error",
        request_id,
        payload: Error {
            code,
            message,
            retryable,
            request_id,
        },
    };
    Bytes::from(simd_json::to_vec(&envelope).expect("frames serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Option<SignalingRequest> {
        parse_signaling_frame(text.to_owned()).map(|f| f.request)
    }

    #[test]
    fn the_request_id_is_kept_when_it_is_plain_and_short() {
        let id = |text: &str| parse_signaling_frame(text.to_owned()).unwrap().request_id;
        assert_eq!(
            id(r#"{"type":"rtc.leave","request_id":"leave_1"}"#).as_deref(),
            Some("leave_1")
        );
        assert_eq!(id(r#"{"type":"rtc.leave","request_id":7}"#), None);
        assert_eq!(id(r#"{"type":"rtc.leave","request_id":"a\u0000b"}"#), None);
        let long = format!(
            r#"{{"type":"rtc.leave","request_id":"{}"}}"#,
            "r".repeat(129)
        );
        assert_eq!(id(&long), None);
    }

    #[test]
    fn parses_the_client_frames_of_the_contract() {
        assert_eq!(
            parse(
                r#"{"type":"rtc.join","request_id":"r","channel_id":"ch","payload":{"ticket":"t.k"}}"#
            ),
            Some(SignalingRequest::Join {
                ticket: Some("t.k".into()),
                channel_id: Some("ch".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"rtc.join","payload":{"ticket":7}}"#),
            Some(SignalingRequest::Join {
                ticket: None,
                channel_id: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"rtc.leave"}"#),
            Some(SignalingRequest::Leave)
        );
        assert_eq!(
            parse(r#"{"type":"rtc.media.state","payload":{"muted":true}}"#),
            Some(SignalingRequest::MediaState {
                payload: Some(r#"{"muted":true}"#.into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"rtc.media.state","payload":null}"#),
            Some(SignalingRequest::MediaState {
                payload: Some("null".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"rtc.media.state"}"#),
            Some(SignalingRequest::MediaState { payload: None })
        );
        assert_eq!(
            parse(r#"{"type":"rtc.offer.publish","payload":{"sdp":"v=0"}}"#),
            Some(SignalingRequest::Offer {
                direction: Direction::Publish,
                sdp: Some("v=0".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"rtc.offer.subscribe","payload":"v=0"}"#),
            Some(SignalingRequest::Offer {
                direction: Direction::Subscribe,
                sdp: None
            })
        );
        assert_eq!(
            parse(
                r#"{"type":"rtc.ice.candidate","payload":{"direction":"subscribe","candidate":"c"}}"#
            ),
            Some(SignalingRequest::Candidate {
                direction: Some(Direction::Subscribe),
                candidate: Some("c".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"rtc.ice.candidate","payload":{"direction":"up","candidate":"c"}}"#),
            Some(SignalingRequest::Candidate {
                direction: None,
                candidate: Some("c".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"rtc.future","payload":[1]}"#),
            Some(SignalingRequest::Unknown {
                kind: "rtc.future".into()
            })
        );
    }

    #[test]
    fn the_kind_names_the_frame_type() {
        for text in [
            r#"{"type":"rtc.join"}"#,
            r#"{"type":"rtc.leave"}"#,
            r#"{"type":"rtc.media.state"}"#,
            r#"{"type":"rtc.offer.publish"}"#,
            r#"{"type":"rtc.offer.subscribe"}"#,
            r#"{"type":"rtc.ice.candidate"}"#,
            r#"{"type":"rtc.other"}"#,
        ] {
            let kind = text
                .trim_start_matches(r#"{"type":""#)
                .trim_end_matches(r#""}"#);
            assert_eq!(parse(text).unwrap().kind(), kind);
        }
    }

    #[test]
    fn anything_but_an_object_with_a_string_type_is_no_frame() {
        for text in [
            "",
            "{",
            "[1]",
            "\"rtc.join\"",
            "{}",
            r#"{"type":5}"#,
            "null",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
        let deep = format!(
            r#"{{"type":"rtc.leave","payload":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(parse(&deep), None, "too deep");
    }

    #[test]
    fn server_frames_have_the_contract_bytes() {
        #[derive(Serialize)]
        struct Sdp<'a> {
            sdp: &'a str,
        }
        assert_eq!(
            &frame("rtc.answer", &Sdp { sdp: "v=0\r\n" })[..],
            br#"{"type":"rtc.answer","payload":{"sdp":"v=0\r\n"}}"#
        );
        assert_eq!(
            &error_frame("rtc_join_denied", "join \"first\"", false, None)[..],
            br#"{"type":"rtc.error","payload":{"code":"rtc_join_denied","message":"join \"first\"","retryable":false}}"#
        );
        assert_eq!(
            &error_frame("overloaded", "busy", true, Some("join_1"))[..],
            br#"{"type":"rtc.error","request_id":"join_1","payload":{"code":"overloaded","message":"busy","retryable":true,"request_id":"join_1"}}"#
        );
    }

    proptest! {
        /// Arbitrary text never panics the parser, and a relayed media state parses again.
        #[test]
        fn parser_never_panics(text in "\\PC{0,64}|\\{\"type\":\"rtc.media.state\",\"payload\":\\PC{0,64}\\}") {
            if let Some(SignalingFrame { request: SignalingRequest::MediaState { payload: Some(p) }, .. }) = parse_signaling_frame(text) {
                prop_assert!(crate::json::to_owned_value(&mut p.into_bytes()).is_ok());
            }
        }
    }
}
