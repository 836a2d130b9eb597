//! Message tables (name → id and structure), Epic's defaults, and the "Protocol" message that
//! announces and updates them.

use super::wire::{FieldType, truncate_for_display};
use std::fmt;

/// Which way a table's messages travel. On the wire (`"Direction"` in a Protocol message)
/// ToStreamer is 0 and FromStreamer is 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Browser (or SFU) → streamer: input, commands, requests.
    ToStreamer,
    /// Streamer → browser: replies, settings, freeze frames, files, the Protocol itself.
    FromStreamer,
}

impl Direction {
    pub fn wire(self) -> u8 {
        match self {
            Direction::ToStreamer => 0,
            Direction::FromStreamer => 1,
        }
    }

    pub fn from_wire(v: u64) -> Option<Direction> {
        match v {
            0 => Some(Direction::ToStreamer),
            1 => Some(Direction::FromStreamer),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ToStreamer => "ToStreamer",
            Direction::FromStreamer => "FromStreamer",
        })
    }
}

/// One message of a table: its id and the types of its fields, in order.
///
/// FromStreamer messages have an empty structure in UE's table (their payloads are fixed by
/// name, see [`FromStreamer`](super::FromStreamer)), and so do the SFU relay wrappers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageSpec {
    pub id: u8,
    pub structure: Vec<FieldType>,
}

impl MessageSpec {
    pub fn new(id: u8, structure: impl Into<Vec<FieldType>>) -> Self {
        MessageSpec {
            id,
            structure: structure.into(),
        }
    }
}

/// Why a change to a [`ProtocolTable`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("id {id} is already used by `{by}`")]
    IdInUse { id: u8, by: String },
    #[error("name `{0}` is already in the table")]
    NameInUse(String),
    #[error("no free id left in the custom range 200..=250")]
    NoFreeId,
    #[error("`Direction` cannot name a message")]
    ReservedName,
}

/// The messages of one direction: name ↔ `{id, structure}`, names and ids both unique, kept in
/// the order they were added (which is the order of the Protocol JSON we write).
#[derive(Clone)]
pub struct ProtocolTable {
    direction: Direction,
    entries: Vec<(String, MessageSpec)>,
    /// Index into `entries` for each id. Ids are unique, so there are at most 256 entries and an
    /// index fits in a `u8`.
    by_id: [Option<u8>; 256],
}

/// The key of a Protocol message that is not a message name.
const DIRECTION_KEY: &str = "Direction";

/// First and last id UE gives to messages added with `IPixelStreaming2DataProtocol::Add()`.
const CUSTOM_IDS: std::ops::RangeInclusive<u8> = 200..=250;

/// ToStreamer messages whose structure Epic's frontend never takes from a Protocol message,
/// because UE 5.1 and 5.2 announced them without one.
const FRONTEND_KEEPS_OWN: [&str; 3] = ["UIInteraction", "Command", "LatencyTest"];

impl ProtocolTable {
    /// An empty table.
    pub fn new(direction: Direction) -> Self {
        ProtocolTable {
            direction,
            entries: Vec::new(),
            by_id: [None; 256],
        }
    }

    /// UE's PS2 ToStreamer table (`DefaultDataProtocol.cpp`), in UE's order. Two choices:
    /// - `MouseMove` deltas are `int16` (the frontend's default and what UE reads); UE's own
    ///   table says `uint16`. The bytes are the same either way.
    /// - `DataChannelLatencyTest` (9) is left out: it is in the frontend's defaults only.
    ///
    /// `ChannelRelayStatus` (198) and `Multiplexed` (199) are listed, with no structure, as UE
    /// lists them; see [`Envelope`](super::Envelope) for their layout.
    pub fn default_to_streamer() -> Self {
        use FieldType::{
            Double as F64, Float as F32, Int16 as I16, String as S, Uint8 as U8, Uint16 as U16,
        };
        let touch = vec![U8, U16, U16, U8, U8, U8];
        let mut xr_controller = vec![F32; 16];
        xr_controller.push(U8);
        let defaults: Vec<(&str, u8, Vec<FieldType>)> = vec![
            ("IFrameRequest", 0, vec![]),
            ("RequestQualityControl", 1, vec![]),
            ("FpsRequest", 2, vec![]),
            ("AverageBitrateRequest", 3, vec![]),
            ("StartStreaming", 4, vec![]),
            ("StopStreaming", 5, vec![]),
            ("LatencyTest", 6, vec![S]),
            ("RequestInitialSettings", 7, vec![]),
            ("TestEcho", 8, vec![S]),
            ("UIInteraction", 50, vec![S]),
            ("Command", 51, vec![S]),
            ("TextboxEntry", 52, vec![S]),
            ("KeyDown", 60, vec![U8, U8]),
            ("KeyUp", 61, vec![U8]),
            ("KeyPress", 62, vec![U16]),
            ("MouseEnter", 70, vec![]),
            ("MouseLeave", 71, vec![]),
            ("MouseDown", 72, vec![U8, U16, U16]),
            ("MouseUp", 73, vec![U8, U16, U16]),
            ("MouseMove", 74, vec![U16, U16, I16, I16]),
            ("MouseWheel", 75, vec![I16, U16, U16]),
            ("MouseDouble", 76, vec![U8, U16, U16]),
            ("TouchStart", 80, touch.clone()),
            ("TouchEnd", 81, touch.clone()),
            ("TouchMove", 82, touch),
            ("GamepadButtonPressed", 90, vec![U8, U8, U8]),
            ("GamepadButtonReleased", 91, vec![U8, U8, U8]),
            ("GamepadAnalog", 92, vec![U8, U8, F64]),
            ("GamepadConnected", 93, vec![]),
            ("GamepadDisconnected", 94, vec![U8]),
            ("XREyeViews", 109, vec![F32; 80]),
            ("XRHMDTransform", 110, vec![F32; 16]),
            ("XRControllerTransform", 111, xr_controller),
            ("XRButtonPressed", 112, vec![U8, U8, U8, F64]),
            ("XRButtonTouched", 113, vec![U8, U8, U8]),
            ("XRButtonReleased", 114, vec![U8, U8, U8]),
            ("XRAnalog", 115, vec![U8, U8, F64]),
            ("XRSystem", 116, vec![U8]),
            ("XRButtonTouchReleased", 117, vec![U8, U8, U8]),
            ("ChannelRelayStatus", 198, vec![]),
            ("Multiplexed", 199, vec![]),
        ];
        Self::from_defaults(Direction::ToStreamer, defaults)
    }

    /// UE's PS2 FromStreamer table, in UE's order. Structures are empty, as in UE: each
    /// message's payload is fixed by its name. The frontend-only `DataChannelLatencyTest` (14) is
    /// left out.
    pub fn default_from_streamer() -> Self {
        let names = [
            "QualityControlOwnership",
            "Response",
            "Command",
            "FreezeFrame",
            "UnfreezeFrame",
            "VideoEncoderAvgQP",
            "LatencyTest",
            "InitialSettings",
            "FileExtension",
            "FileMimeType",
            "FileContents",
            "TestEcho",
            "InputControlOwnership",
            "GamepadResponse",
        ];
        let mut defaults: Vec<(&str, u8, Vec<FieldType>)> = (0u8..)
            .zip(names)
            .map(|(id, name)| (name, id, vec![]))
            .collect();
        defaults.push(("Protocol", 255, vec![]));
        defaults.push(("Multiplexed", 199, vec![]));
        Self::from_defaults(Direction::FromStreamer, defaults)
    }

    fn from_defaults(direction: Direction, defaults: Vec<(&str, u8, Vec<FieldType>)>) -> Self {
        let mut table = ProtocolTable::new(direction);
        for (name, id, structure) in defaults {
            // The default tables have unique names and ids, none of them `Direction`: the
            // default_tables_are_epics test checks every entry.
            let _ = table.insert(name, MessageSpec::new(id, structure));
        }
        table
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&MessageSpec> {
        self.position(name).map(|i| &self.entries[i].1)
    }

    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.get(name).map(|spec| spec.id)
    }

    /// The name and spec of the message with this id.
    pub fn by_id(&self, id: u8) -> Option<(&str, &MessageSpec)> {
        let index = self.by_id[usize::from(id)]?;
        let (name, spec) = &self.entries[usize::from(index)];
        Some((name.as_str(), spec))
    }

    /// Entries in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MessageSpec)> {
        self.entries
            .iter()
            .map(|(name, spec)| (name.as_str(), spec))
    }

    /// Adds a message, or replaces the spec of an existing one (returning the old spec). Refused
    /// if another message already has the id.
    pub fn insert(
        &mut self,
        name: &str,
        spec: MessageSpec,
    ) -> Result<Option<MessageSpec>, TableError> {
        if name == DIRECTION_KEY {
            return Err(TableError::ReservedName);
        }
        if let Some((holder, _)) = self.by_id(spec.id)
            && holder != name
        {
            return Err(TableError::IdInUse {
                id: spec.id,
                by: holder.to_owned(),
            });
        }
        let old = match self.position(name) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, spec)),
            None => {
                self.entries.push((name.to_owned(), spec));
                None
            }
        };
        self.reindex();
        Ok(old)
    }

    pub fn remove(&mut self, name: &str) -> Option<MessageSpec> {
        let i = self.position(name)?;
        let (_, spec) = self.entries.remove(i);
        self.reindex();
        Some(spec)
    }

    /// Adds an app-defined message the way UE's `IPixelStreaming2DataProtocol::Add()` does: with
    /// the first free id of UE's custom range, 200..=250. Returns the id.
    pub fn add_custom(&mut self, name: &str, structure: Vec<FieldType>) -> Result<u8, TableError> {
        if self.position(name).is_some() {
            return Err(TableError::NameInUse(name.to_owned()));
        }
        let id = CUSTOM_IDS
            .clone()
            .find(|id| self.by_id(*id).is_none())
            .ok_or(TableError::NoFreeId)?;
        self.insert(name, MessageSpec::new(id, structure))?;
        Ok(id)
    }

    /// This table as a Protocol message (what a streamer announces on data-channel open).
    pub fn to_protocol_message(&self) -> ProtocolMessage {
        ProtocolMessage {
            direction: self.direction,
            messages: self
                .entries
                .iter()
                .map(|(name, spec)| {
                    (
                        name.clone(),
                        ProtocolEntry {
                            id: spec.id,
                            structure: Some(spec.structure.clone()),
                        },
                    )
                })
                .collect(),
            rejected: Vec::new(),
        }
    }

    /// The JSON of this table's Protocol message:
    /// `{"Direction":0,"IFrameRequest":{"id":0,"structure":[]},...}`.
    pub fn to_protocol_json(&self) -> String {
        self.to_protocol_message().to_json()
    }

    /// Updates this table from a Protocol message received from a streamer, as Epic's frontend
    /// does, with two differences that keep the table usable for
    /// decoding: every name is taken (the frontend takes only names it has a handler for), and
    /// an id taken over by an announced message is removed from the unannounced message that
    /// held it (reported in [`ApplyOutcome::dropped`]).
    ///
    /// - An announced name gets the announced id; its structure too, if one was announced
    ///   (UE 5.1/5.2 sent some without), else it keeps its old one (new names get none).
    /// - In the ToStreamer direction, `UIInteraction`, `Command` and `LatencyTest` are left
    ///   untouched when the table already has them, as the frontend does
    ///   ([`ApplyOutcome::kept`]).
    ///
    /// Nothing changes if the message is for the other direction or gives two names one id.
    pub fn apply(&mut self, message: &ProtocolMessage) -> Result<ApplyOutcome, ProtocolError> {
        if message.direction != self.direction {
            return Err(ProtocolError::DirectionMismatch {
                table: self.direction,
                message: message.direction,
            });
        }
        let mut outcome = ApplyOutcome::default();
        let mut entries = self.entries.clone();
        let mut announced = vec![false; entries.len()];
        for (name, entry) in &message.messages {
            if name == DIRECTION_KEY {
                return Err(ProtocolError::ReservedName);
            }
            if self.direction == Direction::ToStreamer
                && FRONTEND_KEEPS_OWN.contains(&name.as_str())
                && self.position(name).is_some()
            {
                outcome.kept.push(name.clone());
                continue;
            }
            match entries.iter().position(|(n, _)| n == name) {
                Some(i) => {
                    let structure = entry
                        .structure
                        .clone()
                        .unwrap_or_else(|| entries[i].1.structure.clone());
                    entries[i].1 = MessageSpec::new(entry.id, structure);
                    announced[i] = true;
                    outcome.updated.push(name.clone());
                }
                None => {
                    let structure = entry.structure.clone().unwrap_or_default();
                    entries.push((name.clone(), MessageSpec::new(entry.id, structure)));
                    announced.push(true);
                    outcome.added.push(name.clone());
                }
            }
        }
        // Announced messages claim their ids first; an unannounced one that collides goes.
        let mut owner: [Option<usize>; 256] = [None; 256];
        for (i, (name, spec)) in entries.iter().enumerate() {
            if !announced[i] {
                continue;
            }
            if let Some(first) = owner[usize::from(spec.id)] {
                return Err(ProtocolError::DuplicateId {
                    id: spec.id,
                    first: entries[first].0.clone(),
                    second: name.clone(),
                });
            }
            owner[usize::from(spec.id)] = Some(i);
        }
        let mut keep = vec![true; entries.len()];
        for (i, (name, spec)) in entries.iter().enumerate() {
            if announced[i] {
                continue;
            }
            match owner[usize::from(spec.id)] {
                Some(_) => {
                    keep[i] = false;
                    outcome.dropped.push(name.clone());
                }
                None => owner[usize::from(spec.id)] = Some(i),
            }
        }
        let mut keep = keep.into_iter();
        entries.retain(|_| keep.next().unwrap_or(true));
        self.entries = entries;
        self.reindex();
        Ok(outcome)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(n, _)| n == name)
    }

    fn reindex(&mut self) {
        self.by_id = [None; 256];
        for (i, (_, spec)) in self.entries.iter().enumerate() {
            // Ids are unique (insert and apply refuse duplicates), so there are at most 256
            // entries and `i` fits in a u8.
            self.by_id[usize::from(spec.id)] = u8::try_from(i).ok();
        }
    }
}

impl fmt::Debug for ProtocolTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolTable")
            .field("direction", &self.direction)
            .field("entries", &self.entries)
            .finish()
    }
}

/// Tables are equal when they map the same names to the same specs, in whatever order.
impl PartialEq for ProtocolTable {
    fn eq(&self, other: &Self) -> bool {
        self.direction == other.direction
            && self.len() == other.len()
            && self
                .iter()
                .all(|(name, spec)| other.get(name) == Some(spec))
    }
}

impl Eq for ProtocolTable {}

/// What [`ProtocolTable::apply`] did, by message name, for the caller to log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Names new to the table.
    pub added: Vec<String>,
    /// Names whose id (and maybe structure) were replaced.
    pub updated: Vec<String>,
    /// Announced names left as they were (the frontend's UIInteraction/Command/LatencyTest rule).
    pub kept: Vec<String>,
    /// Unannounced names removed because an announced message took their id.
    pub dropped: Vec<String>,
}

/// One message of a Protocol message. `structure` is `None` when the streamer sent none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolEntry {
    pub id: u8,
    pub structure: Option<Vec<FieldType>>,
}

/// An entry of a Protocol message we could not use (no integer id in 0..=255, an unknown field
/// type, ...). Epic's frontend logs and skips these; so do we.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedEntry {
    pub name: String,
    pub reason: String,
}

/// The JSON payload of a "Protocol" message (FromStreamer id 255):
/// `{"Direction":0|1, "<Name>":{"id":n,"structure":["uint8",...]}, ...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolMessage {
    pub direction: Direction,
    /// Usable entries. Parsed ones come in name order (JSON objects are unordered).
    pub messages: Vec<(String, ProtocolEntry)>,
    /// Entries that were skipped, with why.
    pub rejected: Vec<RejectedEntry>,
}

/// Why a Protocol message cannot be used at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("no `Direction`")]
    MissingDirection,
    #[error("`Direction` is not 0 or 1")]
    BadDirection,
    #[error("id {id} is given to both `{first}` and `{second}`")]
    DuplicateId {
        id: u8,
        first: String,
        second: String,
    },
    #[error("a {message} protocol cannot update a {table} table")]
    DirectionMismatch {
        table: Direction,
        message: Direction,
    },
    #[error("`Direction` cannot name a message")]
    ReservedName,
}

impl ProtocolMessage {
    /// Parses the JSON text of a Protocol message. Entries that cannot be used are collected in
    /// `rejected`; only a message that is not an object with a valid `Direction`, or that gives
    /// one id to two names, is an error.
    pub fn from_json(text: &str) -> Result<ProtocolMessage, ProtocolError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
        let serde_json::Value::Object(map) = value else {
            return Err(ProtocolError::NotAnObject);
        };
        let direction = map
            .get(DIRECTION_KEY)
            .ok_or(ProtocolError::MissingDirection)?;
        let direction = json_integer(direction)
            .and_then(Direction::from_wire)
            .ok_or(ProtocolError::BadDirection)?;
        let mut messages: Vec<(String, ProtocolEntry)> = Vec::new();
        let mut rejected = Vec::new();
        let mut owner: [Option<usize>; 256] = [None; 256];
        for (name, value) in map {
            if name == DIRECTION_KEY {
                continue;
            }
            match parse_entry(&value) {
                Ok(entry) => {
                    if let Some(first) = owner[usize::from(entry.id)] {
                        return Err(ProtocolError::DuplicateId {
                            id: entry.id,
                            first: truncate_for_display(&messages[first].0),
                            second: truncate_for_display(&name),
                        });
                    }
                    owner[usize::from(entry.id)] = Some(messages.len());
                    messages.push((name, entry));
                }
                Err(reason) => rejected.push(RejectedEntry {
                    name: truncate_for_display(&name),
                    reason,
                }),
            }
        }
        Ok(ProtocolMessage {
            direction,
            messages,
            rejected,
        })
    }

    /// The JSON text, `Direction` first, then the messages in order. An entry without a
    /// structure is written without the `structure` key.
    pub fn to_json(&self) -> String {
        let mut out = format!("{{\"{DIRECTION_KEY}\":{}", self.direction.wire());
        for (name, entry) in &self.messages {
            out.push(',');
            // A JSON string value's Display is its quoted, escaped text.
            out.push_str(&serde_json::Value::from(name.as_str()).to_string());
            out.push_str(&format!(":{{\"id\":{}", entry.id));
            if let Some(structure) = &entry.structure {
                out.push_str(",\"structure\":[");
                let names: Vec<String> = structure.iter().map(|t| format!("\"{t}\"")).collect();
                out.push_str(&names.join(","));
                out.push(']');
            }
            out.push('}');
        }
        out.push('}');
        out
    }
}

/// A non-negative integer, written either as one or as an integral float (`60.0`).
fn json_integer(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=255.0).contains(f))
            .map(|f| f as u64)
    })
}

fn parse_entry(value: &serde_json::Value) -> Result<ProtocolEntry, String> {
    let serde_json::Value::Object(fields) = value else {
        return Err("not an object".to_owned());
    };
    let id = fields.get("id").ok_or_else(|| "no `id`".to_owned())?;
    let id = json_integer(id)
        .and_then(|id| u8::try_from(id).ok())
        .ok_or_else(|| "`id` is not an integer in 0..=255".to_owned())?;
    let structure = match fields.get("structure") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => {
                        FieldType::from_name(s).map_err(|e| e.to_string())
                    }
                    _ => Err("`structure` holds a non-string".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err("`structure` is not an array".to_owned()),
    };
    Ok(ProtocolEntry { id, structure })
}

#[cfg(test)]
mod tests {
    use super::*;
    use FieldType::*;
    use rstest::rstest;

    #[rstest]
    #[case("IFrameRequest", 0, vec![])]
    #[case("RequestQualityControl", 1, vec![])]
    #[case("FpsRequest", 2, vec![])]
    #[case("AverageBitrateRequest", 3, vec![])]
    #[case("StartStreaming", 4, vec![])]
    #[case("StopStreaming", 5, vec![])]
    #[case("LatencyTest", 6, vec![String])]
    #[case("RequestInitialSettings", 7, vec![])]
    #[case("TestEcho", 8, vec![String])]
    #[case("UIInteraction", 50, vec![String])]
    #[case("Command", 51, vec![String])]
    #[case("TextboxEntry", 52, vec![String])]
    #[case("KeyDown", 60, vec![Uint8, Uint8])]
    #[case("KeyUp", 61, vec![Uint8])]
    #[case("KeyPress", 62, vec![Uint16])]
    #[case("MouseEnter", 70, vec![])]
    #[case("MouseLeave", 71, vec![])]
    #[case("MouseDown", 72, vec![Uint8, Uint16, Uint16])]
    #[case("MouseUp", 73, vec![Uint8, Uint16, Uint16])]
    #[case("MouseMove", 74, vec![Uint16, Uint16, Int16, Int16])]
    #[case("MouseWheel", 75, vec![Int16, Uint16, Uint16])]
    #[case("MouseDouble", 76, vec![Uint8, Uint16, Uint16])]
    #[case("TouchStart", 80, vec![Uint8, Uint16, Uint16, Uint8, Uint8, Uint8])]
    #[case("TouchEnd", 81, vec![Uint8, Uint16, Uint16, Uint8, Uint8, Uint8])]
    #[case("TouchMove", 82, vec![Uint8, Uint16, Uint16, Uint8, Uint8, Uint8])]
    #[case("GamepadButtonPressed", 90, vec![Uint8, Uint8, Uint8])]
    #[case("GamepadButtonReleased", 91, vec![Uint8, Uint8, Uint8])]
    #[case("GamepadAnalog", 92, vec![Uint8, Uint8, Double])]
    #[case("GamepadConnected", 93, vec![])]
    #[case("GamepadDisconnected", 94, vec![Uint8])]
    #[case("XREyeViews", 109, vec![Float; 80])]
    #[case("XRHMDTransform", 110, vec![Float; 16])]
    #[case("XRControllerTransform", 111, [vec![Float; 16], vec![Uint8]].concat())]
    #[case("XRButtonPressed", 112, vec![Uint8, Uint8, Uint8, Double])]
    #[case("XRButtonTouched", 113, vec![Uint8, Uint8, Uint8])]
    #[case("XRButtonReleased", 114, vec![Uint8, Uint8, Uint8])]
    #[case("XRAnalog", 115, vec![Uint8, Uint8, Double])]
    #[case("XRSystem", 116, vec![Uint8])]
    #[case("XRButtonTouchReleased", 117, vec![Uint8, Uint8, Uint8])]
    #[case("ChannelRelayStatus", 198, vec![])]
    #[case("Multiplexed", 199, vec![])]
    fn default_to_streamer_table_is_ues(
        #[case] name: &str,
        #[case] id: u8,
        #[case] structure: Vec<FieldType>,
    ) {
        let table = ProtocolTable::default_to_streamer();
        assert_eq!(table.get(name), Some(&MessageSpec::new(id, structure)));
        assert_eq!(table.by_id(id).map(|(n, _)| n), Some(name));
    }

    #[test]
    fn default_tables_are_epics() {
        let to = ProtocolTable::default_to_streamer();
        assert_eq!(to.direction(), Direction::ToStreamer);
        assert_eq!(to.len(), 41, "every rstest case above, nothing else");
        assert!(to.get("DataChannelLatencyTest").is_none());

        let from = ProtocolTable::default_from_streamer();
        assert_eq!(from.direction(), Direction::FromStreamer);
        let expected = [
            ("QualityControlOwnership", 0),
            ("Response", 1),
            ("Command", 2),
            ("FreezeFrame", 3),
            ("UnfreezeFrame", 4),
            ("VideoEncoderAvgQP", 5),
            ("LatencyTest", 6),
            ("InitialSettings", 7),
            ("FileExtension", 8),
            ("FileMimeType", 9),
            ("FileContents", 10),
            ("TestEcho", 11),
            ("InputControlOwnership", 12),
            ("GamepadResponse", 13),
            ("Protocol", 255),
            ("Multiplexed", 199),
        ];
        let got: Vec<(&str, u8)> = from.iter().map(|(n, s)| (n, s.id)).collect();
        assert_eq!(got, expected);
        assert!(from.iter().all(|(_, s)| s.structure.is_empty()));
    }

    #[test]
    fn protocol_json_is_written_in_table_order_with_direction_first() {
        let mut table = ProtocolTable::new(Direction::ToStreamer);
        table
            .insert("KeyUp", MessageSpec::new(61, vec![Uint8]))
            .unwrap();
        table
            .insert("MouseEnter", MessageSpec::new(70, vec![]))
            .unwrap();
        assert_eq!(
            table.to_protocol_json(),
            r#"{"Direction":0,"KeyUp":{"id":61,"structure":["uint8"]},"MouseEnter":{"id":70,"structure":[]}}"#
        );
    }

    #[test]
    fn default_tables_round_trip_through_protocol_json() {
        for table in [
            ProtocolTable::default_to_streamer(),
            ProtocolTable::default_from_streamer(),
        ] {
            let json = table.to_protocol_json();
            let parsed = ProtocolMessage::from_json(&json).unwrap();
            assert!(parsed.rejected.is_empty());
            assert_eq!(parsed.messages.len(), table.len());
            let mut rebuilt = ProtocolTable::new(table.direction());
            // An empty table has no UIInteraction etc. to keep, so it takes everything.
            let outcome = rebuilt.apply(&parsed).unwrap();
            assert_eq!(outcome.added.len(), table.len());
            assert_eq!(rebuilt, table);
            // And the JSON is valid JSON with the direction as a number.
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["Direction"], u64::from(table.direction().wire()));
        }
    }

    #[test]
    fn table_equality_ignores_order() {
        let mut a = ProtocolTable::new(Direction::ToStreamer);
        let mut b = ProtocolTable::new(Direction::ToStreamer);
        a.insert("A", MessageSpec::new(1, vec![])).unwrap();
        a.insert("B", MessageSpec::new(2, vec![])).unwrap();
        b.insert("B", MessageSpec::new(2, vec![])).unwrap();
        assert_ne!(a, b);
        b.insert("A", MessageSpec::new(1, vec![])).unwrap();
        assert_eq!(a, b);
        b.insert("A", MessageSpec::new(1, vec![Uint8])).unwrap();
        assert_ne!(a, b);
        assert_ne!(
            ProtocolTable::new(Direction::FromStreamer),
            ProtocolTable::new(Direction::ToStreamer)
        );
    }

    #[test]
    fn names_are_escaped_in_protocol_json() {
        let mut table = ProtocolTable::new(Direction::FromStreamer);
        table
            .insert("say \"hi\"\\ ü", MessageSpec::new(3, vec![]))
            .unwrap();
        let parsed = ProtocolMessage::from_json(&table.to_protocol_json()).unwrap();
        assert_eq!(parsed.messages[0].0, "say \"hi\"\\ ü");
    }

    #[test]
    fn renumbering_moves_ids_and_adds_custom_messages() {
        let mut table = ProtocolTable::default_to_streamer();
        let msg = ProtocolMessage::from_json(
            r#"{"Direction":0,"KeyDown":{"id":200,"structure":["uint8","uint8"]},
                "MyCustom":{"id":201,"structure":["uint8","double"]}}"#,
        )
        .unwrap();
        let outcome = table.apply(&msg).unwrap();
        assert_eq!(outcome.updated, ["KeyDown"]);
        assert_eq!(outcome.added, ["MyCustom"]);
        assert_eq!(table.id_of("KeyDown"), Some(200));
        assert!(table.by_id(60).is_none());
        assert_eq!(
            table.by_id(201),
            Some(("MyCustom", &MessageSpec::new(201, vec![Uint8, Double])))
        );
    }

    #[test]
    fn an_announced_id_evicts_the_unannounced_holder() {
        let mut table = ProtocolTable::default_to_streamer();
        let msg =
            ProtocolMessage::from_json(r#"{"Direction":0,"MyCustom":{"id":60,"structure":[]}}"#)
                .unwrap();
        let outcome = table.apply(&msg).unwrap();
        assert_eq!(outcome.dropped, ["KeyDown"]);
        assert_eq!(table.by_id(60).map(|(n, _)| n), Some("MyCustom"));
        assert!(table.get("KeyDown").is_none());
    }

    #[test]
    fn swapping_two_ids_in_one_message_works() {
        let mut table = ProtocolTable::default_to_streamer();
        let msg =
            ProtocolMessage::from_json(r#"{"Direction":0,"KeyDown":{"id":61},"KeyUp":{"id":60}}"#)
                .unwrap();
        table.apply(&msg).unwrap();
        assert_eq!(
            table.by_id(61),
            Some(("KeyDown", &MessageSpec::new(61, vec![Uint8, Uint8]))),
            "no structure announced: the old one stays"
        );
        assert_eq!(table.by_id(60).map(|(n, _)| n), Some("KeyUp"));
    }

    #[test]
    fn ui_interaction_command_and_latency_test_keep_their_structure() {
        let mut table = ProtocolTable::default_to_streamer();
        let msg = ProtocolMessage::from_json(
            r#"{"Direction":0,"UIInteraction":{"id":50,"structure":[]},
                "Command":{"id":51},"LatencyTest":{"id":6,"structure":[]},
                "TestEcho":{"id":8,"structure":[]}}"#,
        )
        .unwrap();
        let outcome = table.apply(&msg).unwrap();
        assert_eq!(outcome.kept, ["Command", "LatencyTest", "UIInteraction"]);
        assert_eq!(table.get("UIInteraction").unwrap().structure, [String]);
        assert_eq!(table.get("LatencyTest").unwrap().structure, [String]);
        assert_eq!(table.get("TestEcho").unwrap().structure, []);
        // The rule is the frontend's, for ToStreamer only.
        let mut from = ProtocolTable::default_from_streamer();
        let msg = ProtocolMessage::from_json(r#"{"Direction":1,"Command":{"id":40}}"#).unwrap();
        assert_eq!(from.apply(&msg).unwrap().updated, ["Command"]);
        assert_eq!(from.id_of("Command"), Some(40));
    }

    #[test]
    fn bad_entries_are_rejected_one_by_one() {
        let msg = ProtocolMessage::from_json(
            r#"{"Direction":1,"Good":{"id":3,"structure":["uint8"]},
                "NoId":{"structure":[]},"BigId":{"id":256},"NegId":{"id":-1},
                "Fractional":{"id":1.5},"Raw":{"id":4,"structure":["raw"]},
                "Undefined":{"id":5,"structure":[""]},"NotArray":{"id":6,"structure":"uint8"},
                "NotObject":7,"Nested":{"id":8,"structure":[["uint8"]]},
                "Float":{"id":9.0}}"#,
        )
        .unwrap();
        assert_eq!(msg.direction, Direction::FromStreamer);
        let ok: Vec<&str> = msg.messages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(ok, ["Float", "Good"]);
        let rejected: Vec<&str> = msg.rejected.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            rejected,
            [
                "BigId",
                "Fractional",
                "NegId",
                "Nested",
                "NoId",
                "NotArray",
                "NotObject",
                "Raw",
                "Undefined"
            ]
        );
        let raw = msg.rejected.iter().find(|r| r.name == "Raw").unwrap();
        assert_eq!(raw.reason, "unknown field type `raw`");
    }

    #[rstest]
    #[case("{", "not valid JSON")]
    #[case("[]", "not a JSON object")]
    #[case("{}", "no `Direction`")]
    #[case(r#"{"Direction":2}"#, "`Direction` is not 0 or 1")]
    #[case(r#"{"Direction":"0"}"#, "`Direction` is not 0 or 1")]
    #[case(
        r#"{"Direction":0,"A":{"id":1},"B":{"id":1}}"#,
        "id 1 is given to both `A` and `B`"
    )]
    fn unusable_protocol_messages_are_errors(#[case] text: &str, #[case] expected: &str) {
        let err = ProtocolMessage::from_json(text).unwrap_err();
        assert!(err.to_string().starts_with(expected), "{text}: {err}");
    }

    #[test]
    fn jsstreamer_direction_only_message_changes_nothing() {
        let mut table = ProtocolTable::default_from_streamer();
        let msg = ProtocolMessage::from_json(r#"{"Direction":1}"#).unwrap();
        assert_eq!(table.apply(&msg).unwrap(), ApplyOutcome::default());
        assert_eq!(table, ProtocolTable::default_from_streamer());
    }

    #[test]
    fn a_protocol_for_the_other_direction_is_refused() {
        let mut table = ProtocolTable::default_to_streamer();
        let msg = ProtocolMessage::from_json(r#"{"Direction":1,"X":{"id":1}}"#).unwrap();
        assert!(matches!(
            table.apply(&msg),
            Err(ProtocolError::DirectionMismatch { .. })
        ));
        assert_eq!(table, ProtocolTable::default_to_streamer());
    }

    #[test]
    fn hand_built_duplicates_are_refused_without_change() {
        let mut table = ProtocolTable::default_to_streamer();
        let entry = ProtocolEntry {
            id: 1,
            structure: None,
        };
        let msg = ProtocolMessage {
            direction: Direction::ToStreamer,
            messages: vec![("A".into(), entry.clone()), ("B".into(), entry)],
            rejected: vec![],
        };
        assert!(matches!(
            table.apply(&msg),
            Err(ProtocolError::DuplicateId { id: 1, .. })
        ));
        assert_eq!(table, ProtocolTable::default_to_streamer());
    }

    #[test]
    fn insert_refuses_a_taken_id_and_the_direction_key() {
        let mut table = ProtocolTable::default_to_streamer();
        assert_eq!(
            table.insert("Mine", MessageSpec::new(60, vec![])),
            Err(TableError::IdInUse {
                id: 60,
                by: "KeyDown".into()
            })
        );
        assert_eq!(
            table.insert("Direction", MessageSpec::new(250, vec![])),
            Err(TableError::ReservedName)
        );
        // Replacing a message's own spec is fine.
        let old = table
            .insert("KeyDown", MessageSpec::new(60, vec![Uint8]))
            .unwrap();
        assert_eq!(old, Some(MessageSpec::new(60, vec![Uint8, Uint8])));
        assert_eq!(
            table.remove("KeyDown"),
            Some(MessageSpec::new(60, vec![Uint8]))
        );
        assert!(table.by_id(60).is_none());
    }

    #[test]
    fn custom_messages_get_ues_user_range() {
        let mut table = ProtocolTable::default_to_streamer();
        assert_eq!(table.add_custom("A", vec![Uint16]), Ok(200));
        assert_eq!(table.add_custom("B", vec![]), Ok(201));
        assert_eq!(
            table.add_custom("A", vec![]),
            Err(TableError::NameInUse("A".into()))
        );
        for i in 0..49 {
            table.add_custom(&format!("C{i}"), vec![]).unwrap();
        }
        assert_eq!(table.add_custom("Z", vec![]), Err(TableError::NoFreeId));
    }

    /// Names and ids are unique and the id index agrees with the entries.
    fn assert_consistent(
        table: &ProtocolTable,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut ids = std::collections::HashSet::new();
        for (name, spec) in table.iter() {
            proptest::prop_assert!(ids.insert(spec.id), "id {} twice", spec.id);
            proptest::prop_assert_eq!(table.by_id(spec.id), Some((name, spec)));
        }
        let indexed = (0..=255u8).filter(|id| table.by_id(*id).is_some()).count();
        proptest::prop_assert_eq!(indexed, table.len());
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn protocol_parsing_never_panics(text in ".{0,300}") {
            let _ = ProtocolMessage::from_json(&text);
        }

        #[test]
        fn applying_any_protocol_keeps_the_table_consistent(
            entries in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["KeyDown", "KeyUp", "MouseMove", "UIInteraction", "Command", "A", "B", "C"]),
                    proptest::sample::select(vec![0u8, 1, 8, 50, 51, 60, 61, 74, 199, 200, 255]),
                    proptest::option::of(proptest::collection::vec(proptest::sample::select(FieldType::ALL.to_vec()), 0..4)),
                ),
                0..8,
            )
        ) {
            let mut body = serde_json::Map::new();
            body.insert("Direction".into(), 0.into());
            for (name, id, structure) in &entries {
                let mut entry = serde_json::json!({"id": id});
                if let Some(structure) = structure {
                    entry["structure"] = structure.iter().map(|t| t.name()).collect();
                }
                body.insert((*name).into(), entry);
            }
            let text = serde_json::Value::Object(body).to_string();
            let mut table = ProtocolTable::default_to_streamer();
            let before = table.clone();
            match ProtocolMessage::from_json(&text) {
                Ok(msg) => {
                    let outcome = table.apply(&msg).unwrap();
                    assert_consistent(&table)?;
                    // Every announced name that was not kept has the announced id now.
                    for (name, entry) in &msg.messages {
                        if !outcome.kept.contains(name) {
                            proptest::prop_assert_eq!(table.id_of(name), Some(entry.id));
                        }
                    }
                    // Nothing disappears but what was reported dropped.
                    for (name, _) in before.iter() {
                        proptest::prop_assert!(
                            table.get(name).is_some() || outcome.dropped.iter().any(|d| d == name)
                        );
                    }
                }
                Err(ProtocolError::DuplicateId { .. }) => proptest::prop_assert_eq!(&table, &before),
                Err(other) => proptest::prop_assert!(false, "{}", other),
            }
        }
    }
}
