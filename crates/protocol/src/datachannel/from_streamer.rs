//! FromStreamer messages (streamer → browser): typed, with ids resolved by name through the
//! FromStreamer table in effect.

use super::message::{ENVELOPE_NAMES, EncodeError};
use super::table::ProtocolTable;
use super::wire::{DecodeError, Reader, push_utf16le};

/// A message from the streamer to the browser.
///
/// Payloads are fixed by name (UE's FromStreamer table announces no structures): a `uint8`
/// boolean, or text that runs to the end of the message as UTF-16LE with **no** length prefix,
/// or, for `FreezeFrame` and `FileContents`, a little-endian `int32` total size followed by a
/// chunk of the data.
///
/// Variants are never renamed or reused: add new ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromStreamer {
    /// Whether this player now owns quality control (a PS1 notion).
    QualityControlOwnership(bool),
    /// The app's reply to a `UIInteraction`; app-defined text.
    Response(String),
    /// JSON; the frontend handles
    /// `{"command":"onScreenKeyboard","showOnScreenKeyboard":b,"x":..,"y":..,"contents":".."}`.
    Command(String),
    /// One chunk of a JPEG freeze frame of `total_size` bytes; chunks repeat until it is complete.
    FreezeFrame {
        total_size: u32,
        chunk: Vec<u8>,
    },
    UnfreezeFrame,
    /// The encoder's average QP, as decimal text.
    VideoEncoderAvgQp(String),
    /// JSON timings answering a `LatencyTest`.
    LatencyTest(String),
    /// JSON: `{"PixelStreaming":{...},"Encoder":{...},"WebRTC":{...},"ConfigOptions":{...}}`.
    InitialSettings(String),
    FileExtension(String),
    FileMimeType(String),
    /// One chunk of a file of `total_size` bytes.
    FileContents {
        total_size: u32,
        chunk: Vec<u8>,
    },
    TestEcho(String),
    /// Whether this player's input now controls the stream.
    InputControlOwnership(bool),
    /// JSON `{"controllerId":n}`, answering `GamepadConnected`.
    GamepadResponse(String),
    /// JSON of a protocol table, see [`ProtocolMessage`](super::ProtocolMessage).
    Protocol(String),
    /// A message of the table we do not type (e.g. an app's custom one), payload untouched.
    Other {
        name: String,
        payload: Vec<u8>,
    },
}

impl FromStreamer {
    /// Epic's message name.
    pub fn name(&self) -> &str {
        match self {
            FromStreamer::QualityControlOwnership(_) => "QualityControlOwnership",
            FromStreamer::Response(_) => "Response",
            FromStreamer::Command(_) => "Command",
            FromStreamer::FreezeFrame { .. } => "FreezeFrame",
            FromStreamer::UnfreezeFrame => "UnfreezeFrame",
            FromStreamer::VideoEncoderAvgQp(_) => "VideoEncoderAvgQP",
            FromStreamer::LatencyTest(_) => "LatencyTest",
            FromStreamer::InitialSettings(_) => "InitialSettings",
            FromStreamer::FileExtension(_) => "FileExtension",
            FromStreamer::FileMimeType(_) => "FileMimeType",
            FromStreamer::FileContents { .. } => "FileContents",
            FromStreamer::TestEcho(_) => "TestEcho",
            FromStreamer::InputControlOwnership(_) => "InputControlOwnership",
            FromStreamer::GamepadResponse(_) => "GamepadResponse",
            FromStreamer::Protocol(_) => "Protocol",
            FromStreamer::Other { name, .. } => name,
        }
    }

    /// The Protocol message announcing `table` (either direction).
    pub fn protocol(table: &ProtocolTable) -> FromStreamer {
        FromStreamer::Protocol(table.to_protocol_json())
    }

    /// `GamepadResponse` assigning `controller_id`, as UE writes it.
    pub fn gamepad_response(controller_id: u8) -> FromStreamer {
        FromStreamer::GamepadResponse(format!("{{\"controllerId\":{controller_id}}}"))
    }

    /// The two Protocol messages a streamer sends as soon as a data channel opens: its
    /// ToStreamer table (Direction 0), then its FromStreamer table (Direction 1), both with the
    /// `Protocol` id of `from`.
    pub fn protocol_messages(
        to: &ProtocolTable,
        from: &ProtocolTable,
    ) -> Result<[Vec<u8>; 2], EncodeError> {
        Ok([
            FromStreamer::protocol(to).encode(from)?,
            FromStreamer::protocol(from).encode(from)?,
        ])
    }

    /// UE's reply to a ToStreamer `TestEcho`, byte for byte: UE does not decode the string; it
    /// sends back everything after the id byte as UTF-16 code units, so the reply starts with
    /// the request's length prefix as one extra code unit (and drops an odd last byte).
    pub fn ue_test_echo(table: &ProtocolTable, request: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let id = id_of(table, "TestEcho")?;
        let payload = request.get(1..).unwrap_or_default();
        let even = payload.len() - payload.len() % 2;
        let mut out = Vec::with_capacity(1 + even);
        out.push(id);
        out.extend_from_slice(&payload[..even]);
        Ok(out)
    }

    /// Encodes this message with the id `table` (a FromStreamer table) gives its name.
    pub fn encode(&self, table: &ProtocolTable) -> Result<Vec<u8>, EncodeError> {
        let name = self.name();
        if ENVELOPE_NAMES.contains(&name) {
            return Err(EncodeError::Envelope(name.to_owned()));
        }
        let mut out = vec![id_of(table, name)?];
        match self {
            FromStreamer::QualityControlOwnership(b) | FromStreamer::InputControlOwnership(b) => {
                out.push(u8::from(*b))
            }
            FromStreamer::Response(text)
            | FromStreamer::Command(text)
            | FromStreamer::VideoEncoderAvgQp(text)
            | FromStreamer::LatencyTest(text)
            | FromStreamer::InitialSettings(text)
            | FromStreamer::FileExtension(text)
            | FromStreamer::FileMimeType(text)
            | FromStreamer::TestEcho(text)
            | FromStreamer::GamepadResponse(text)
            | FromStreamer::Protocol(text) => {
                push_utf16le(&mut out, text);
            }
            FromStreamer::FreezeFrame { total_size, chunk }
            | FromStreamer::FileContents { total_size, chunk } => {
                let size = i32::try_from(*total_size)
                    .map_err(|_| EncodeError::InvalidValue("total size is over i32::MAX"))?;
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(chunk);
            }
            FromStreamer::UnfreezeFrame => {}
            FromStreamer::Other { payload, .. } => out.extend_from_slice(payload),
        }
        Ok(out)
    }

    /// Decodes a message from a streamer by the id → name of `table` (a FromStreamer table).
    /// Strict like [`decode`](super::decode): text must be whole, valid UTF-16, booleans exactly
    /// one byte. Never panics.
    pub fn decode(
        table: &ProtocolTable,
        bytes: &[u8],
        max_len: usize,
    ) -> Result<FromStreamer, DecodeError> {
        if bytes.len() > max_len {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: max_len,
            });
        }
        let (&id, payload) = bytes.split_first().ok_or(DecodeError::Empty)?;
        let (name, _) = table.by_id(id).ok_or(DecodeError::UnknownId(id))?;
        if ENVELOPE_NAMES.contains(&name) {
            return Err(DecodeError::Envelope { id });
        }
        let mut r = Reader::new(id, payload);
        let flag = |r: &mut Reader<'_>| -> Result<bool, DecodeError> {
            let v = r.u8()?;
            Ok(v != 0)
        };
        let sized = |r: &mut Reader<'_>| -> Result<(u32, Vec<u8>), DecodeError> {
            let size = u32::try_from(r.i32()?).map_err(|_| DecodeError::InvalidValue {
                id,
                detail: "negative total size",
            })?;
            Ok((size, r.rest().to_vec()))
        };
        let message = match name {
            "QualityControlOwnership" => FromStreamer::QualityControlOwnership(flag(&mut r)?),
            "InputControlOwnership" => FromStreamer::InputControlOwnership(flag(&mut r)?),
            "Response" => FromStreamer::Response(r.rest_as_text()?),
            "Command" => FromStreamer::Command(r.rest_as_text()?),
            "VideoEncoderAvgQP" => FromStreamer::VideoEncoderAvgQp(r.rest_as_text()?),
            "LatencyTest" => FromStreamer::LatencyTest(r.rest_as_text()?),
            "InitialSettings" => FromStreamer::InitialSettings(r.rest_as_text()?),
            "FileExtension" => FromStreamer::FileExtension(r.rest_as_text()?),
            "FileMimeType" => FromStreamer::FileMimeType(r.rest_as_text()?),
            "TestEcho" => FromStreamer::TestEcho(r.rest_as_text()?),
            "GamepadResponse" => FromStreamer::GamepadResponse(r.rest_as_text()?),
            "Protocol" => FromStreamer::Protocol(r.rest_as_text()?),
            "FreezeFrame" => {
                let (total_size, chunk) = sized(&mut r)?;
                FromStreamer::FreezeFrame { total_size, chunk }
            }
            "FileContents" => {
                let (total_size, chunk) = sized(&mut r)?;
                FromStreamer::FileContents { total_size, chunk }
            }
            "UnfreezeFrame" => FromStreamer::UnfreezeFrame,
            other => FromStreamer::Other {
                name: other.to_owned(),
                payload: r.rest().to_vec(),
            },
        };
        r.finish()?;
        Ok(message)
    }
}

fn id_of(table: &ProtocolTable, name: &str) -> Result<u8, EncodeError> {
    table
        .id_of(name)
        .ok_or_else(|| EncodeError::UnknownName(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::super::EPIC_MAX_MESSAGE_LEN as MAX;
    use super::super::table::{Direction, MessageSpec, ProtocolMessage};
    use super::super::{InputEvent, Value, encode};
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    fn table() -> ProtocolTable {
        ProtocolTable::default_from_streamer()
    }

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    #[rstest]
    #[case(FromStreamer::QualityControlOwnership(true), vec![0, 1])]
    #[case(FromStreamer::QualityControlOwnership(false), vec![0, 0])]
    #[case(FromStreamer::Response("ok".into()), vec![1, b'o', 0, b'k', 0])]
    #[case(FromStreamer::Command("{}".into()), vec![2, b'{', 0, b'}', 0])]
    #[case(FromStreamer::FreezeFrame { total_size: 3, chunk: vec![0xFF, 0xD8, 0xFF] }, vec![3, 3, 0, 0, 0, 0xFF, 0xD8, 0xFF])]
    #[case(FromStreamer::UnfreezeFrame, vec![4])]
    #[case(FromStreamer::VideoEncoderAvgQp("27".into()), vec![5, b'2', 0, b'7', 0])]
    #[case(FromStreamer::LatencyTest(String::new()), vec![6])]
    #[case(FromStreamer::InitialSettings("😀".into()), vec![7, 0x3D, 0xD8, 0x00, 0xDE])]
    #[case(FromStreamer::FileExtension("png".into()), [vec![8], utf16("png")].concat())]
    #[case(FromStreamer::FileMimeType("image/png".into()), [vec![9], utf16("image/png")].concat())]
    #[case(FromStreamer::FileContents { total_size: 70000, chunk: vec![1] }, vec![10, 0x70, 0x11, 0x01, 0x00, 1])]
    #[case(FromStreamer::TestEcho("e".into()), vec![11, b'e', 0])]
    #[case(FromStreamer::InputControlOwnership(true), vec![12, 1])]
    #[case(FromStreamer::gamepad_response(2), [vec![13], utf16(r#"{"controllerId":2}"#)].concat())]
    #[case(FromStreamer::Protocol(r#"{"Direction":1}"#.into()), [vec![255], utf16(r#"{"Direction":1}"#)].concat())]
    fn from_streamer_messages_have_epics_exact_bytes(
        #[case] message: FromStreamer,
        #[case] bytes: Vec<u8>,
    ) {
        assert_eq!(message.encode(&table()).unwrap(), bytes);
        assert_eq!(
            FromStreamer::decode(&table(), &bytes, MAX).unwrap(),
            message
        );
    }

    #[rstest]
    #[case(&[], DecodeError::Empty)]
    #[case(&[14, 1], DecodeError::UnknownId(14))]
    #[case(&[0], DecodeError::Truncated { id: 0, needed: 1, available: 0 })]
    #[case(&[0, 1, 0], DecodeError::TrailingBytes { id: 0, extra: 1 })]
    #[case(&[4, 0], DecodeError::TrailingBytes { id: 4, extra: 1 })]
    #[case(&[1, b'o', 0, b'k'], DecodeError::OddUtf16Length { id: 1 })]
    #[case(&[255, 0x3D, 0xD8], DecodeError::InvalidUtf16 { id: 255 })]
    #[case(&[3, 1, 0, 0], DecodeError::Truncated { id: 3, needed: 4, available: 3 })]
    #[case(&[10, 0xFF, 0xFF, 0xFF, 0xFF, 1], DecodeError::InvalidValue { id: 10, detail: "negative total size" })]
    #[case(&[199, 2, 0, b'P', 0, 0], DecodeError::Envelope { id: 199 })]
    fn malformed_from_streamer_messages_are_errors(
        #[case] bytes: &[u8],
        #[case] expected: DecodeError,
    ) {
        assert_eq!(FromStreamer::decode(&table(), bytes, MAX), Err(expected));
    }

    #[test]
    fn from_streamer_messages_over_the_limit_are_refused() {
        let bytes = FromStreamer::FileContents {
            total_size: 100_000,
            chunk: vec![7; MAX],
        }
        .encode(&table())
        .unwrap();
        assert_eq!(
            FromStreamer::decode(&table(), &bytes, MAX),
            Err(DecodeError::TooLong {
                len: MAX + 5,
                max: MAX
            })
        );
    }

    #[test]
    fn ids_come_from_the_table_in_effect() {
        let mut t = table();
        let msg = ProtocolMessage::from_json(
            r#"{"Direction":1,"Response":{"id":42,"structure":[]},"AppPing":{"id":220}}"#,
        )
        .unwrap();
        t.apply(&msg).unwrap();
        let bytes = FromStreamer::Response("hey".into()).encode(&t).unwrap();
        assert_eq!(bytes[0], 42);
        assert_eq!(
            FromStreamer::decode(&t, &bytes, MAX).unwrap(),
            FromStreamer::Response("hey".into())
        );
        let other = FromStreamer::decode(&t, &[220, 9, 9], MAX).unwrap();
        assert_eq!(
            other,
            FromStreamer::Other {
                name: "AppPing".into(),
                payload: vec![9, 9]
            }
        );
        assert_eq!(other.encode(&t).unwrap(), [220, 9, 9]);

        t.remove("TestEcho");
        assert_eq!(
            FromStreamer::TestEcho("x".into()).encode(&t),
            Err(EncodeError::UnknownName("TestEcho".into()))
        );
        let relay = FromStreamer::Other {
            name: "Multiplexed".into(),
            payload: vec![],
        };
        assert_eq!(
            relay.encode(&t),
            Err(EncodeError::Envelope("Multiplexed".into()))
        );
    }

    #[test]
    fn protocol_messages_announce_both_tables() {
        let mut to = ProtocolTable::default_to_streamer();
        to.add_custom("MyCustom", vec![super::super::FieldType::Uint8])
            .unwrap();
        let from = table();
        let [first, second] = FromStreamer::protocol_messages(&to, &from).unwrap();
        assert_eq!(first[0], 255);
        assert_eq!(second[0], 255);
        // UE's full table fits in one message a 16 KiB reader accepts.
        assert!(first.len() < MAX / 2, "{} bytes", first.len());

        // A client decodes them and rebuilds both tables by name.
        let mut client_to = ProtocolTable::new(Direction::ToStreamer);
        let mut client_from = ProtocolTable::new(Direction::FromStreamer);
        for bytes in [first, second] {
            let FromStreamer::Protocol(json) = FromStreamer::decode(&from, &bytes, MAX).unwrap()
            else {
                panic!("not a Protocol message");
            };
            let msg = ProtocolMessage::from_json(&json).unwrap();
            match msg.direction {
                Direction::ToStreamer => client_to.apply(&msg).unwrap(),
                Direction::FromStreamer => client_from.apply(&msg).unwrap(),
            };
        }
        assert_eq!(client_to, to);
        assert_eq!(client_from, from);
        assert_eq!(
            client_to.get("MyCustom"),
            Some(&MessageSpec::new(200, vec![super::super::FieldType::Uint8]))
        );
    }

    #[test]
    fn test_echo_reply_copies_ues_quirk() {
        let to = ProtocolTable::default_to_streamer();
        let request = InputEvent::TestEcho("hi".into()).encode(&to).unwrap();
        assert_eq!(request, [8, 2, 0, b'h', 0, b'i', 0]);
        let reply = FromStreamer::ue_test_echo(&table(), &request).unwrap();
        assert_eq!(reply, [11, 2, 0, b'h', 0, b'i', 0]);
        assert_eq!(
            FromStreamer::decode(&table(), &reply, MAX).unwrap(),
            FromStreamer::TestEcho("\u{2}hi".into())
        );
        // An odd last byte is dropped, an empty request echoes nothing.
        assert_eq!(
            FromStreamer::ue_test_echo(&table(), &[8, 1, 0, 7]).unwrap(),
            [11, 1, 0]
        );
        assert_eq!(FromStreamer::ue_test_echo(&table(), &[]).unwrap(), [11]);
        // A plain TestEcho is the text alone.
        let plain = encode(&to, "TestEcho", &[Value::Str("hi".into())]).unwrap();
        assert_eq!(plain, request);
    }

    fn any_message() -> impl Strategy<Value = FromStreamer> {
        let text = any::<String>();
        prop_oneof![
            any::<bool>().prop_map(FromStreamer::QualityControlOwnership),
            any::<bool>().prop_map(FromStreamer::InputControlOwnership),
            text.prop_map(FromStreamer::Response),
            text.prop_map(FromStreamer::Command),
            text.prop_map(FromStreamer::VideoEncoderAvgQp),
            text.prop_map(FromStreamer::LatencyTest),
            text.prop_map(FromStreamer::InitialSettings),
            text.prop_map(FromStreamer::FileExtension),
            text.prop_map(FromStreamer::FileMimeType),
            text.prop_map(FromStreamer::TestEcho),
            text.prop_map(FromStreamer::GamepadResponse),
            text.prop_map(FromStreamer::Protocol),
            Just(FromStreamer::UnfreezeFrame),
            (
                0..=i32::MAX as u32,
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(total_size, chunk)| FromStreamer::FreezeFrame { total_size, chunk }),
            (
                0..=i32::MAX as u32,
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(total_size, chunk)| FromStreamer::FileContents { total_size, chunk }),
        ]
    }

    proptest! {
        #[test]
        fn from_streamer_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = FromStreamer::decode(&table(), &bytes, 200);
        }

        #[test]
        fn from_streamer_messages_round_trip(message in any_message()) {
            let bytes = message.encode(&table()).unwrap();
            prop_assert_eq!(FromStreamer::decode(&table(), &bytes, usize::MAX).unwrap(), message);
        }
    }
}
