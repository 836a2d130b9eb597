//! The field vocabulary of the data-channel protocol and the byte-level reading and writing of it.

use std::fmt;
use std::str::FromStr;

/// The type of one field of a message, named exactly as in Epic's "Protocol" JSON.
///
/// | name     | Rust  | bytes                                                   |
/// |----------|-------|---------------------------------------------------------|
/// | `uint8`  | `u8`  | 1                                                       |
/// | `uint16` | `u16` | 2, little-endian                                        |
/// | `int16`  | `i16` | 2, little-endian                                        |
/// | `float`  | `f32` | 4, little-endian                                        |
/// | `double` | `f64` | 8, little-endian                                        |
/// | `string` | `String` | `u16` length in UTF-16 code units, then that many UTF-16LE units |
///
/// Epic's frontend has also learnt a `raw` blob type (May 2026); UE never sends it, and we do not
/// accept it: a Protocol entry using it is rejected, not guessed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    Uint8,
    Uint16,
    Int16,
    Float,
    Double,
    String,
}

impl FieldType {
    pub const ALL: [FieldType; 6] = [
        FieldType::Uint8,
        FieldType::Uint16,
        FieldType::Int16,
        FieldType::Float,
        FieldType::Double,
        FieldType::String,
    ];

    /// The name used in Epic's Protocol JSON.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Uint8 => "uint8",
            FieldType::Uint16 => "uint16",
            FieldType::Int16 => "int16",
            FieldType::Float => "float",
            FieldType::Double => "double",
            FieldType::String => "string",
        }
    }

    /// Parses a name from Epic's Protocol JSON; names are case-sensitive, as in Epic's code.
    pub fn from_name(name: &str) -> Result<FieldType, UnknownFieldType> {
        FieldType::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| UnknownFieldType(truncate_for_display(name)))
    }

    /// The encoded size, or `None` for `string` (whose size depends on its length).
    pub fn fixed_size(self) -> Option<usize> {
        match self {
            FieldType::Uint8 => Some(1),
            FieldType::Uint16 | FieldType::Int16 => Some(2),
            FieldType::Float => Some(4),
            FieldType::Double => Some(8),
            FieldType::String => None,
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FieldType {
    type Err = UnknownFieldType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldType::from_name(s)
    }
}

/// A field type name that is not one of Epic's (truncated to a readable length).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown field type `{0}`")]
pub struct UnknownFieldType(pub String);

/// One decoded field value. Its variant always matches the [`FieldType`] of the field it was
/// read from.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    U16(u16),
    I16(i16),
    F32(f32),
    F64(f64),
    Str(String),
}

impl Value {
    /// The field type this value is the natural encoding of.
    pub fn field_type(&self) -> FieldType {
        match self {
            Value::U8(_) => FieldType::Uint8,
            Value::U16(_) => FieldType::Uint16,
            Value::I16(_) => FieldType::Int16,
            Value::F32(_) => FieldType::Float,
            Value::F64(_) => FieldType::Double,
            Value::Str(_) => FieldType::String,
        }
    }

    pub fn as_u8(&self) -> Option<u8> {
        match self {
            Value::U8(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_u16(&self) -> Option<u16> {
        match self {
            Value::U16(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_i16(&self) -> Option<i16> {
        match self {
            Value::I16(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_f32(&self) -> Option<f32> {
        match self {
            Value::F32(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(v) => Some(v),
            _ => None,
        }
    }
}

/// Why bytes received on a data channel are not a message we can use. None of these is fatal to
/// a connection: Epic's peers log and drop such messages, and so should callers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("message of {len} bytes is over the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    /// No message with this id in the table in effect (e.g. a custom message the peer has not
    /// announced). Count and log it.
    #[error("unknown message id {0}")]
    UnknownId(u8),
    /// The payload ends before a field does: `needed` bytes were required at a point where only
    /// `available` were left.
    #[error("message {id} is truncated: needed {needed} more bytes, {available} left")]
    Truncated {
        id: u8,
        needed: usize,
        available: usize,
    },
    /// The payload goes on after its last field.
    #[error("message {id} has {extra} bytes after its last field")]
    TrailingBytes { id: u8, extra: usize },
    #[error("message {id}: UTF-16 text of odd byte length")]
    OddUtf16Length { id: u8 },
    #[error("message {id}: invalid UTF-16 (unpaired surrogate)")]
    InvalidUtf16 { id: u8 },
    /// The id belongs to an SFU relay wrapper; unwrap it with
    /// [`Envelope::decode`](super::Envelope::decode) first.
    #[error("message {id} is an SFU relay envelope")]
    Envelope { id: u8 },
    #[error("message {id}: {detail}")]
    InvalidValue { id: u8, detail: &'static str },
}

/// Longest name we echo back in errors.
const MAX_NAME_ECHO: usize = 64;

pub(crate) fn truncate_for_display(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_NAME_ECHO).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Reads little-endian fields from a payload, reporting truncation against message `id`.
pub(crate) struct Reader<'a> {
    id: u8,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(id: u8, payload: &'a [u8]) -> Self {
        Reader { id, rest: payload }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated {
                id: self.id,
                needed: n,
                available: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_le_bytes)
    }

    /// Reads one field of type `ty`.
    pub(crate) fn value(&mut self, ty: FieldType) -> Result<Value, DecodeError> {
        Ok(match ty {
            FieldType::Uint8 => Value::U8(self.u8()?),
            FieldType::Uint16 => Value::U16(self.u16()?),
            FieldType::Int16 => Value::I16(self.array().map(i16::from_le_bytes)?),
            FieldType::Float => Value::F32(self.array().map(f32::from_le_bytes)?),
            FieldType::Double => Value::F64(self.array().map(f64::from_le_bytes)?),
            FieldType::String => {
                let units = usize::from(self.u16()?);
                let bytes = self.take(units * 2)?;
                Value::Str(utf16le_to_string(self.id, bytes)?)
            }
        })
    }

    /// The rest of the payload as UTF-16LE text (Epic's FromStreamer strings).
    pub(crate) fn rest_as_text(&mut self) -> Result<String, DecodeError> {
        let bytes = std::mem::take(&mut self.rest);
        utf16le_to_string(self.id, bytes)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Fails if anything is left.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { id: self.id, extra }),
        }
    }
}

/// Decodes UTF-16LE strictly: an odd byte count or an unpaired surrogate is an error (Epic's
/// `TextDecoder` would substitute U+FFFD; we would rather count the message as bad).
pub(crate) fn utf16le_to_string(id: u8, bytes: &[u8]) -> Result<String, DecodeError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(DecodeError::OddUtf16Length { id });
    }
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| DecodeError::InvalidUtf16 { id })
}

/// Appends `text` as UTF-16LE code units, returning how many units were written.
pub(crate) fn push_utf16le(out: &mut Vec<u8>, text: &str) -> usize {
    let mut units = 0;
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
        units += 1;
    }
    units
}

/// The length of `text` in UTF-16 code units (JavaScript's `String.length`).
pub(crate) fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("uint8", FieldType::Uint8)]
    #[case("uint16", FieldType::Uint16)]
    #[case("int16", FieldType::Int16)]
    #[case("float", FieldType::Float)]
    #[case("double", FieldType::Double)]
    #[case("string", FieldType::String)]
    fn field_types_use_epic_names(#[case] name: &str, #[case] ty: FieldType) {
        assert_eq!(FieldType::from_name(name), Ok(ty));
        assert_eq!(ty.name(), name);
        assert_eq!(name.parse::<FieldType>(), Ok(ty));
    }

    #[rstest]
    #[case("")]
    #[case("raw")]
    #[case("Uint8")]
    #[case("int32")]
    #[case("only_string")]
    fn unknown_field_type_names_are_errors(#[case] name: &str) {
        assert_eq!(
            FieldType::from_name(name),
            Err(UnknownFieldType(name.to_owned()))
        );
    }

    #[test]
    fn long_unknown_field_type_names_are_truncated() {
        let err = FieldType::from_name(&"x".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 100);
    }

    #[test]
    fn utf16_decoding_is_strict() {
        assert_eq!(utf16le_to_string(1, &[]), Ok(String::new()));
        assert_eq!(
            utf16le_to_string(1, &[0x3D, 0xD8, 0x00, 0xDE]),
            Ok("😀".to_owned())
        );
        assert_eq!(
            utf16le_to_string(1, &[0x41]),
            Err(DecodeError::OddUtf16Length { id: 1 })
        );
        // A lone high surrogate, then a lone low one.
        assert_eq!(
            utf16le_to_string(1, &[0x3D, 0xD8]),
            Err(DecodeError::InvalidUtf16 { id: 1 })
        );
        assert_eq!(
            utf16le_to_string(1, &[0x00, 0xDE, 0x41, 0x00]),
            Err(DecodeError::InvalidUtf16 { id: 1 })
        );
    }

    #[test]
    fn reader_reports_what_was_missing() {
        let mut r = Reader::new(9, &[1, 2, 3]);
        assert_eq!(r.u16(), Ok(0x0201));
        assert_eq!(
            r.value(FieldType::Double),
            Err(DecodeError::Truncated {
                id: 9,
                needed: 8,
                available: 1
            })
        );
    }
}
