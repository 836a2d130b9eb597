//! The structure-driven codec: any message of a table, decoded to named fields and encoded from
//! values, following the table's `structure`.

use super::table::ProtocolTable;
use super::wire::{DecodeError, FieldType, Reader, Value, push_utf16le, utf16_len};
use std::borrow::Cow;

/// Names that are SFU relay wrappers rather than structured messages.
pub(crate) const ENVELOPE_NAMES: [&str; 2] = ["Multiplexed", "ChannelRelayStatus"];

/// A decoded message: its id, its name in the table in effect, and its fields in wire order.
///
/// Field names are Epic's (see [`field_names`]); the fields of a message we have no names for
/// (an app's custom message), or whose announced structure has a different number of fields
/// than Epic's, are named `field0`, `field1`, ...
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub id: u8,
    pub name: String,
    pub fields: Vec<(Cow<'static, str>, Value)>,
}

impl Decoded {
    /// The value of the first field with this name.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value)
    }

    /// The values in wire order, ready for [`encode`].
    pub fn values(&self) -> Vec<Value> {
        self.fields.iter().map(|(_, v)| v.clone()).collect()
    }
}

/// Decodes one message received on a data channel, by the id → name → structure of `table`.
///
/// Strict: every field must be complete, nothing may follow the last one, strings must be valid
/// UTF-16, and the whole message must be at most `max_len` bytes (see
/// [`EPIC_MAX_MESSAGE_LEN`](super::EPIC_MAX_MESSAGE_LEN)). An id missing from the table is
/// [`DecodeError::UnknownId`]; the SFU wrappers are [`DecodeError::Envelope`]. Never panics.
pub fn decode(table: &ProtocolTable, bytes: &[u8], max_len: usize) -> Result<Decoded, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLong {
            len: bytes.len(),
            max: max_len,
        });
    }
    let (&id, payload) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let (name, spec) = table.by_id(id).ok_or(DecodeError::UnknownId(id))?;
    if ENVELOPE_NAMES.contains(&name) {
        return Err(DecodeError::Envelope { id });
    }
    let names = field_names(name).filter(|names| names.len() == spec.structure.len());
    let mut reader = Reader::new(id, payload);
    let mut fields = Vec::with_capacity(spec.structure.len());
    for (i, ty) in spec.structure.iter().enumerate() {
        let value = reader.value(*ty)?;
        let field = match names {
            Some(names) => Cow::Borrowed(names[i]),
            None => Cow::Owned(format!("field{i}")),
        };
        fields.push((field, value));
    }
    reader.finish()?;
    Ok(Decoded {
        id,
        name: name.to_owned(),
        fields,
    })
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// The table in effect has no message of this name (the peer has not announced it).
    #[error("no message `{0}` in the table")]
    UnknownName(String),
    #[error("`{name}` has {expected} fields, got {got} values")]
    Arity {
        name: String,
        expected: usize,
        got: usize,
    },
    #[error("field {index} of `{name}` is {expected}, cannot hold {got:?}")]
    BadValue {
        name: String,
        index: usize,
        expected: FieldType,
        got: Value,
    },
    #[error("text of {units} UTF-16 units is longer than the 65535 a message can carry")]
    TextTooLong { units: usize },
    /// The SFU relay wrappers are built with [`Envelope`](super::Envelope), not from values.
    #[error("`{0}` is an SFU relay envelope")]
    Envelope(String),
    #[error("{0}")]
    InvalidValue(&'static str),
}

/// Encodes message `name` of `table` from `values`, one per field of its structure, as Epic's
/// frontend does (`SendMessageController.sendMessageToStreamer`).
///
/// A value must be of its field's type, with the conversions Epic's `DataView` writes make
/// harmless: integers go into any integer field they fit, a 16-bit value into a 16-bit field of
/// the other signedness as its two's-complement bits (so `I16(-1)` in a `uint16` field is
/// `ff ff`), an `F32` into a `double` field and an `F64` into a `float` field (rounded).
pub fn encode(table: &ProtocolTable, name: &str, values: &[Value]) -> Result<Vec<u8>, EncodeError> {
    let spec = table
        .get(name)
        .ok_or_else(|| EncodeError::UnknownName(name.to_owned()))?;
    if ENVELOPE_NAMES.contains(&name) {
        return Err(EncodeError::Envelope(name.to_owned()));
    }
    if values.len() != spec.structure.len() {
        return Err(EncodeError::Arity {
            name: name.to_owned(),
            expected: spec.structure.len(),
            got: values.len(),
        });
    }
    let mut out = vec![spec.id];
    for (index, (ty, value)) in spec.structure.iter().zip(values).enumerate() {
        if !write_value(&mut out, *ty, value)? {
            return Err(EncodeError::BadValue {
                name: name.to_owned(),
                index,
                expected: *ty,
                got: value.clone(),
            });
        }
    }
    Ok(out)
}

/// Writes `value` as a `ty` field; `Ok(false)` if it does not fit.
fn write_value(out: &mut Vec<u8>, ty: FieldType, value: &Value) -> Result<bool, EncodeError> {
    let int = match value {
        Value::U8(v) => Some(i64::from(*v)),
        Value::U16(v) => Some(i64::from(*v)),
        Value::I16(v) => Some(i64::from(*v)),
        _ => None,
    };
    match (ty, value) {
        (FieldType::Uint8, _) => match int.and_then(|v| u8::try_from(v).ok()) {
            Some(v) => out.push(v),
            None => return Ok(false),
        },
        (FieldType::Uint16, Value::I16(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (FieldType::Uint16, _) => match int.and_then(|v| u16::try_from(v).ok()) {
            Some(v) => out.extend_from_slice(&v.to_le_bytes()),
            None => return Ok(false),
        },
        (FieldType::Int16, Value::U16(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (FieldType::Int16, _) => match int.and_then(|v| i16::try_from(v).ok()) {
            Some(v) => out.extend_from_slice(&v.to_le_bytes()),
            None => return Ok(false),
        },
        (FieldType::Float, Value::F32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        // Rounds to the nearest f32, as DataView.setFloat32 does.
        (FieldType::Float, Value::F64(v)) => out.extend_from_slice(&(*v as f32).to_le_bytes()),
        (FieldType::Double, Value::F64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (FieldType::Double, Value::F32(v)) => out.extend_from_slice(&f64::from(*v).to_le_bytes()),
        (FieldType::String, Value::Str(text)) => {
            let units = utf16_len(text);
            let len = u16::try_from(units).map_err(|_| EncodeError::TextTooLong { units })?;
            out.extend_from_slice(&len.to_le_bytes());
            push_utf16le(out, text);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// 16 names of a 4×4 matrix's floats in the order Epic sends them: `m00`, `m01`, ..., `m33`,
/// row by row as UE reads them (each after `prefix`).
macro_rules! matrix_names {
    ($($prefix:literal),* $(; $($extra:literal),*)?) => {
        &[
            $(
                concat!($prefix, "m00"), concat!($prefix, "m01"), concat!($prefix, "m02"), concat!($prefix, "m03"),
                concat!($prefix, "m10"), concat!($prefix, "m11"), concat!($prefix, "m12"), concat!($prefix, "m13"),
                concat!($prefix, "m20"), concat!($prefix, "m21"), concat!($prefix, "m22"), concat!($prefix, "m23"),
                concat!($prefix, "m30"), concat!($prefix, "m31"), concat!($prefix, "m32"), concat!($prefix, "m33"),
            )*
            $($($extra),*)?
        ]
    };
}

const TOUCH: &[&str] = &["numTouches", "x", "y", "idx", "force", "valid"];
const MOUSE_BUTTON: &[&str] = &["button", "x", "y"];
const GAMEPAD_BUTTON: &[&str] = &["controllerId", "button", "isRepeat"];
const XR_BUTTON: &[&str] = &["handedness", "button", "isRepeat"];
const TEXT: &[&str] = &["text"];

/// Epic's names for the fields of a ToStreamer message, in wire order, or `None` for a name we
/// do not know (or one with no fields).
///
/// Sources, in order of preference: the field names of Epic's JSStreamer protocol table
/// (`Extras/JSStreamer/src/protocol.ts`), then the comments of UE's `DefaultDataProtocol.cpp`
/// and the frontend's `StreamMessageController.ts`, camel-cased. Two deliberate exceptions:
/// `KeyPress` carries `charCode` (JSStreamer says `keyCode`, but the value is a character code
/// and the frontend calls it that), and every string field is named `text`, so that one name
/// reads the payload of `UIInteraction`, `Command`, `TextboxEntry`, `LatencyTest` and
/// `TestEcho` alike.
pub fn field_names(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "LatencyTest" | "TestEcho" | "UIInteraction" | "Command" | "TextboxEntry" => TEXT,
        "KeyDown" => &["keyCode", "isRepeat"],
        "KeyUp" => &["keyCode"],
        "KeyPress" => &["charCode"],
        "MouseDown" | "MouseUp" | "MouseDouble" => MOUSE_BUTTON,
        "MouseMove" => &["x", "y", "deltaX", "deltaY"],
        "MouseWheel" => &["delta", "x", "y"],
        "TouchStart" | "TouchEnd" | "TouchMove" => TOUCH,
        "GamepadButtonPressed" | "GamepadButtonReleased" => GAMEPAD_BUTTON,
        "GamepadAnalog" => &["controllerId", "button", "analogValue"],
        "GamepadDisconnected" => &["controllerId"],
        "XREyeViews" => matrix_names!(
            "leftEyeTransform.",
            "leftEyeProjection.",
            "rightEyeTransform.",
            "rightEyeProjection.",
            "hmdTransform."
        ),
        "XRHMDTransform" => matrix_names!(""),
        "XRControllerTransform" => matrix_names!(""; "handedness"),
        "XRButtonPressed" => &["handedness", "button", "isRepeat", "pressedAmount"],
        "XRButtonTouched" | "XRButtonReleased" | "XRButtonTouchReleased" => XR_BUTTON,
        "XRAnalog" => &["handedness", "button", "analogValue"],
        "XRSystem" => &["system"],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::table::{Direction, MessageSpec, ProtocolMessage};
    use super::super::wire::FieldType;
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    const MAX: usize = super::super::EPIC_MAX_MESSAGE_LEN;

    fn table() -> ProtocolTable {
        ProtocolTable::default_to_streamer()
    }

    /// A sample value for each field type, different per field so that order mistakes show.
    fn sample(ty: FieldType, i: usize) -> Value {
        let k = u8::try_from(i % 200).unwrap();
        match ty {
            FieldType::Uint8 => Value::U8(k + 1),
            FieldType::Uint16 => Value::U16(0x1234 + u16::from(k)),
            FieldType::Int16 => Value::I16(-300 - i16::from(k)),
            FieldType::Float => Value::F32(1.5 + f32::from(k)),
            FieldType::Double => Value::F64(-0.25 - f64::from(k)),
            FieldType::String => Value::Str(format!("{{\"n\":{i}}} ü 😀")),
        }
    }

    /// Equality with floats compared by bits (NaN round-trips too).
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
            (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    #[test]
    fn every_default_to_streamer_message_round_trips() {
        let table = table();
        let mut count = 0;
        for (name, spec) in table.iter() {
            if ENVELOPE_NAMES.contains(&name) {
                continue;
            }
            let values: Vec<Value> = spec
                .structure
                .iter()
                .enumerate()
                .map(|(i, ty)| sample(*ty, i))
                .collect();
            let bytes = encode(&table, name, &values).unwrap();
            assert_eq!(bytes[0], spec.id);
            let decoded = decode(&table, &bytes, MAX).unwrap();
            assert_eq!(decoded.id, spec.id);
            assert_eq!(decoded.name, name);
            assert_eq!(decoded.values(), values, "{name}");
            // Every default message has Epic's field names, none positional.
            if !spec.structure.is_empty() {
                let names = field_names(name).expect(name);
                assert_eq!(names.len(), spec.structure.len(), "{name}");
                assert!(decoded.fields.iter().all(|(f, _)| !f.starts_with("field")));
            }
            count += 1;
        }
        assert_eq!(count, 39);
    }

    #[rstest]
    // MouseDown, left button, at 25% width and 75% height.
    #[case("MouseDown", vec![Value::U8(0), Value::U16(16384), Value::U16(49152)], vec![72, 0, 0x00, 0x40, 0x00, 0xC0])]
    #[case("MouseUp", vec![Value::U8(2), Value::U16(1), Value::U16(65535)], vec![73, 2, 1, 0, 0xFF, 0xFF])]
    #[case("MouseMove", vec![Value::U16(32768), Value::U16(0), Value::I16(-1), Value::I16(327)], vec![74, 0x00, 0x80, 0, 0, 0xFF, 0xFF, 0x47, 0x01])]
    #[case("MouseWheel", vec![Value::I16(-120), Value::U16(2), Value::U16(3)], vec![75, 0x88, 0xFF, 2, 0, 3, 0])]
    #[case("KeyDown", vec![Value::U8(65), Value::U8(1)], vec![60, 65, 1])]
    #[case("KeyUp", vec![Value::U8(13)], vec![61, 13])]
    #[case("KeyPress", vec![Value::U16(0x20AC)], vec![62, 0xAC, 0x20])]
    #[case("MouseEnter", vec![], vec![70])]
    #[case("IFrameRequest", vec![], vec![0])]
    #[case("TouchStart", vec![Value::U8(1), Value::U16(256), Value::U16(512), Value::U8(0), Value::U8(255), Value::U8(1)], vec![80, 1, 0, 1, 0, 2, 0, 255, 1])]
    #[case("GamepadAnalog", vec![Value::U8(0), Value::U8(3), Value::F64(-1.0)], vec![92, 0, 3, 0, 0, 0, 0, 0, 0, 0xF0, 0xBF])]
    #[case("XRSystem", vec![Value::U8(2)], vec![116, 2])]
    #[case("UIInteraction", vec![Value::Str("hi".into())], vec![50, 2, 0, b'h', 0, b'i', 0])]
    #[case("Command", vec![Value::Str(String::new())], vec![51, 0, 0])]
    // Non-BMP: one char, two UTF-16 units (a surrogate pair), length 2.
    #[case("TestEcho", vec![Value::Str("😀".into())], vec![8, 2, 0, 0x3D, 0xD8, 0x00, 0xDE])]
    #[case("TextboxEntry", vec![Value::Str("é€".into())], vec![52, 2, 0, 0xE9, 0x00, 0xAC, 0x20])]
    fn messages_have_epics_exact_bytes(
        #[case] name: &str,
        #[case] values: Vec<Value>,
        #[case] bytes: Vec<u8>,
    ) {
        assert_eq!(encode(&table(), name, &values).unwrap(), bytes);
        assert_eq!(decode(&table(), &bytes, MAX).unwrap().values(), values);
    }

    #[test]
    fn decoded_fields_carry_epic_names() {
        let d = decode(&table(), &[72, 0, 0x00, 0x40, 0x00, 0xC0], MAX).unwrap();
        assert_eq!(d.name, "MouseDown");
        assert_eq!(d.get("button"), Some(&Value::U8(0)));
        assert_eq!(d.get("x"), Some(&Value::U16(16384)));
        assert_eq!(d.get("y"), Some(&Value::U16(49152)));
        let d = decode(&table(), &[74, 0, 0, 0, 0, 0xFF, 0xFF, 1, 0], MAX).unwrap();
        assert_eq!(d.get("deltaX"), Some(&Value::I16(-1)));
        assert_eq!(d.get("deltaY"), Some(&Value::I16(1)));
        let d = decode(&table(), &[50, 1, 0, b'x', 0], MAX).unwrap();
        assert_eq!(d.get("text"), Some(&Value::Str("x".into())));
        let touch = decode(&table(), &[80, 1, 0, 0, 0, 0, 3, 128, 1], MAX).unwrap();
        let names: Vec<&str> = touch.fields.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["numTouches", "x", "y", "idx", "force", "valid"]);
        let eye = field_names("XREyeViews").unwrap();
        assert_eq!(eye.len(), 80);
        assert_eq!(eye[0], "leftEyeTransform.m00");
        assert_eq!(eye[79], "hmdTransform.m33");
        assert_eq!(
            field_names("XRControllerTransform").unwrap()[16],
            "handedness"
        );
    }

    #[rstest]
    #[case(&[], DecodeError::Empty)]
    #[case(&[42], DecodeError::UnknownId(42))]
    #[case(&[254, 1, 2], DecodeError::UnknownId(254))]
    #[case(&[72, 0, 0x00, 0x40, 0x00], DecodeError::Truncated { id: 72, needed: 2, available: 1 })]
    #[case(&[72], DecodeError::Truncated { id: 72, needed: 1, available: 0 })]
    #[case(&[92, 0, 3, 0, 0, 0], DecodeError::Truncated { id: 92, needed: 8, available: 3 })]
    #[case(&[50, 3, 0, b'h', 0, b'i', 0], DecodeError::Truncated { id: 50, needed: 6, available: 4 })]
    #[case(&[50, 0], DecodeError::Truncated { id: 50, needed: 2, available: 1 })]
    #[case(&[72, 0, 0x00, 0x40, 0x00, 0xC0, 9], DecodeError::TrailingBytes { id: 72, extra: 1 })]
    #[case(&[0, 0], DecodeError::TrailingBytes { id: 0, extra: 1 })]
    #[case(&[50, 1, 0, b'h', 0, 0], DecodeError::TrailingBytes { id: 50, extra: 1 })]
    #[case(&[50, 1, 0, 0x3D, 0xD8], DecodeError::InvalidUtf16 { id: 50 })]
    #[case(&[50, 2, 0, 0x00, 0xDE, 0x3D, 0xD8], DecodeError::InvalidUtf16 { id: 50 })]
    #[case(&[199, 2, 0, b'P', 0, 0], DecodeError::Envelope { id: 199 })]
    #[case(&[198, 2, 0, b'P', 0, 1], DecodeError::Envelope { id: 198 })]
    fn malformed_messages_are_errors(#[case] bytes: &[u8], #[case] expected: DecodeError) {
        assert_eq!(decode(&table(), bytes, MAX), Err(expected));
    }

    #[test]
    fn messages_over_the_limit_are_refused() {
        let text = "a".repeat(100);
        let bytes = encode(&table(), "UIInteraction", &[Value::Str(text)]).unwrap();
        assert_eq!(bytes.len(), 203);
        assert!(decode(&table(), &bytes, 203).is_ok());
        assert_eq!(
            decode(&table(), &bytes, 202),
            Err(DecodeError::TooLong { len: 203, max: 202 })
        );
        let huge = vec![0u8; MAX + 1];
        assert_eq!(
            decode(&table(), &huge, MAX),
            Err(DecodeError::TooLong {
                len: MAX + 1,
                max: MAX
            })
        );
    }

    #[test]
    fn encode_checks_names_arity_and_values() {
        let t = table();
        assert_eq!(
            encode(&t, "Nope", &[]),
            Err(EncodeError::UnknownName("Nope".into()))
        );
        assert!(matches!(
            encode(&t, "KeyDown", &[Value::U8(1)]),
            Err(EncodeError::Arity {
                expected: 2,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            encode(&t, "KeyUp", &[Value::U16(256)]),
            Err(EncodeError::BadValue { index: 0, .. })
        ));
        assert!(matches!(
            encode(&t, "KeyUp", &[Value::I16(-1)]),
            Err(EncodeError::BadValue { .. })
        ));
        assert!(matches!(
            encode(&t, "KeyUp", &[Value::Str("a".into())]),
            Err(EncodeError::BadValue { .. })
        ));
        assert!(matches!(
            encode(&t, "UIInteraction", &[Value::U8(1)]),
            Err(EncodeError::BadValue { .. })
        ));
        assert!(matches!(
            encode(
                &t,
                "GamepadAnalog",
                &[Value::U8(0), Value::U8(0), Value::U8(1)]
            ),
            Err(EncodeError::BadValue { index: 2, .. })
        ));
        assert_eq!(
            encode(&t, "Multiplexed", &[]),
            Err(EncodeError::Envelope("Multiplexed".into()))
        );
        let long = "a".repeat(65536);
        assert_eq!(
            encode(&t, "UIInteraction", &[Value::Str(long)]),
            Err(EncodeError::TextTooLong { units: 65536 })
        );
        assert!(encode(&t, "UIInteraction", &[Value::Str("a".repeat(65535))]).is_ok());
    }

    #[test]
    fn encode_converts_like_epics_dataview() {
        let t = table();
        // Signed into unsigned and back: same bits.
        assert_eq!(
            encode(
                &t,
                "MouseMove",
                &[
                    Value::I16(-1),
                    Value::U8(2),
                    Value::U16(65535),
                    Value::U16(1)
                ]
            )
            .unwrap(),
            [74, 0xFF, 0xFF, 2, 0, 0xFF, 0xFF, 1, 0]
        );
        // Small integers widen; floats convert.
        assert_eq!(encode(&t, "KeyUp", &[Value::U16(13)]).unwrap(), [61, 13]);
        assert_eq!(
            encode(
                &t,
                "GamepadAnalog",
                &[Value::U8(0), Value::U8(1), Value::F32(0.5)]
            )
            .unwrap(),
            encode(
                &t,
                "GamepadAnalog",
                &[Value::U8(0), Value::U8(1), Value::F64(0.5)]
            )
            .unwrap()
        );
        let mut hmd = vec![Value::F64(0.1); 16];
        hmd[0] = Value::F32(2.0);
        let d = decode(&t, &encode(&t, "XRHMDTransform", &hmd).unwrap(), MAX).unwrap();
        assert_eq!(d.get("m00"), Some(&Value::F32(2.0)));
        assert_eq!(d.get("m33"), Some(&Value::F32(0.1)));
    }

    #[test]
    fn a_renumbered_table_decodes_by_the_new_ids() {
        let mut t = table();
        let msg = ProtocolMessage::from_json(
            r#"{"Direction":0,"KeyDown":{"id":200,"structure":["uint8","uint8"]},
                "MyCustom":{"id":201,"structure":["uint8","double"]}}"#,
        )
        .unwrap();
        t.apply(&msg).unwrap();
        let key = decode(&t, &[200, 65, 0], MAX).unwrap();
        assert_eq!(key.name, "KeyDown");
        assert_eq!(key.get("keyCode"), Some(&Value::U8(65)));
        assert_eq!(
            decode(&t, &[60, 65, 0], MAX),
            Err(DecodeError::UnknownId(60))
        );

        let bytes = encode(&t, "MyCustom", &[Value::U8(7), Value::F64(2.5)]).unwrap();
        assert_eq!(bytes, [201, 7, 0, 0, 0, 0, 0, 0, 4, 0x40]);
        let custom = decode(&t, &bytes, MAX).unwrap();
        assert_eq!(custom.name, "MyCustom");
        assert_eq!(
            custom.fields,
            [
                (Cow::Borrowed("field0"), Value::U8(7)),
                (Cow::Borrowed("field1"), Value::F64(2.5))
            ]
        );
    }

    #[test]
    fn a_changed_structure_loses_epic_names_but_still_decodes() {
        let mut t = table();
        t.insert("KeyDown", MessageSpec::new(60, vec![FieldType::Uint8]))
            .unwrap();
        let d = decode(&t, &[60, 65], MAX).unwrap();
        assert_eq!(d.get("field0"), Some(&Value::U8(65)));
        // A table for the other direction decodes all the same: direction is the caller's.
        let mut from = ProtocolTable::new(Direction::FromStreamer);
        from.insert("X", MessageSpec::new(3, vec![FieldType::Int16]))
            .unwrap();
        assert_eq!(
            decode(&from, &[3, 1, 0], MAX).unwrap().values(),
            [Value::I16(1)]
        );
    }

    fn field_type() -> impl Strategy<Value = FieldType> {
        proptest::sample::select(FieldType::ALL.to_vec())
    }

    fn value_of(ty: FieldType) -> BoxedStrategy<Value> {
        match ty {
            FieldType::Uint8 => any::<u8>().prop_map(Value::U8).boxed(),
            FieldType::Uint16 => any::<u16>().prop_map(Value::U16).boxed(),
            FieldType::Int16 => any::<i16>().prop_map(Value::I16).boxed(),
            FieldType::Float => any::<u32>()
                .prop_map(|b| Value::F32(f32::from_bits(b)))
                .boxed(),
            FieldType::Double => any::<u64>()
                .prop_map(|b| Value::F64(f64::from_bits(b)))
                .boxed(),
            FieldType::String => any::<String>().prop_map(Value::Str).boxed(),
        }
    }

    /// A message of the default table (not an envelope) and values for its fields.
    fn default_message() -> impl Strategy<Value = (String, Vec<Value>)> {
        let specs: Vec<(String, Vec<FieldType>)> = table()
            .iter()
            .filter(|(n, _)| !ENVELOPE_NAMES.contains(n))
            .map(|(n, s)| (n.to_owned(), s.structure.clone()))
            .collect();
        proptest::sample::select(specs).prop_flat_map(|(name, structure)| {
            let values: Vec<_> = structure.into_iter().map(value_of).collect();
            (Just(name), values)
        })
    }

    fn assert_round_trip(
        t: &ProtocolTable,
        name: &str,
        values: &[Value],
    ) -> Result<(), TestCaseError> {
        let bytes = encode(t, name, values).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded =
            decode(t, &bytes, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&decoded.name, name);
        prop_assert_eq!(decoded.fields.len(), values.len());
        for ((_, got), want) in decoded.fields.iter().zip(values) {
            prop_assert!(same(got, want), "{:?} != {:?}", got, want);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&table(), &bytes, 200);
        }

        #[test]
        fn decode_never_panics_on_messages_with_a_known_id(id in proptest::sample::select(table().iter().map(|(_, s)| s.id).collect::<Vec<_>>()), tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = vec![id];
            bytes.extend(tail);
            let _ = decode(&table(), &bytes, MAX);
        }

        #[test]
        fn default_messages_round_trip_arbitrary_values((name, values) in default_message()) {
            assert_round_trip(&table(), &name, &values)?;
        }

        #[test]
        fn custom_structures_round_trip_arbitrary_values(
            (structure, values) in proptest::collection::vec(field_type(), 0..12)
                .prop_flat_map(|s| {
                    let values: Vec<_> = s.iter().copied().map(value_of).collect();
                    (Just(s), values)
                })
        ) {
            let mut t = table();
            t.add_custom("MyCustom", structure).unwrap();
            assert_round_trip(&t, "MyCustom", &values)?;
        }
    }
}
