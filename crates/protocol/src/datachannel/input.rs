//! The typed view of ToStreamer messages (browser → streamer): what a streamer acts on.

use super::message::{Decoded, EncodeError, decode, encode};
use super::table::ProtocolTable;
use super::wire::{DecodeError, Value};
use std::borrow::Cow;

/// A touch point of a `TouchStart`, `TouchEnd` or `TouchMove` message.
///
/// `x`, `y` are quantised positions (see [`coords`](super::coords)); `idx` is the frontend's
/// finger index; `force` is 0–255; `valid` is false when the touch is outside the video (then
/// `x` = `y` = 65535).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Touch {
    pub x: u16,
    pub y: u16,
    pub idx: u8,
    pub force: u8,
    pub valid: bool,
}

/// A gamepad button press or release. Epic's frontend always sends `is_repeat` false on release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GamepadButton {
    pub controller_id: u8,
    pub button: u8,
    pub is_repeat: bool,
}

/// An XR controller button event. `handedness` is 0 left, 1 right, 2 any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct XrButton {
    pub handedness: u8,
    pub button: u8,
    pub is_repeat: bool,
}

/// The five 4×4 matrices of an `XREyeViews` message, each as 16 floats in wire order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XrEyeViews {
    pub left_eye_transform: [f32; 16],
    pub left_eye_projection: [f32; 16],
    pub right_eye_transform: [f32; 16],
    pub right_eye_projection: [f32; 16],
    pub hmd_transform: [f32; 16],
}

/// A ToStreamer message, typed. Built from a [`Decoded`] by name, so it follows whatever ids the
/// table in effect gives; encoded through the table the same way.
///
/// Positions are quantised `u16` (0..=65535 over the video; see [`coords`](super::coords)),
/// deltas quantised `i16`. A message whose name we do not type (an app's custom message), or
/// whose announced structure does not fit the typed shape, is kept as [`InputEvent::Other`].
/// 16-bit fields are read by their bits, so `MouseMove` deltas come out signed whether the table
/// says `int16` (the frontend) or `uint16` (UE).
///
/// Variants are never renamed or reused: add new ones.
#[derive(Clone, Debug, PartialEq)]
pub enum InputEvent {
    IFrameRequest,
    RequestQualityControl,
    FpsRequest,
    AverageBitrateRequest,
    StartStreaming,
    StopStreaming,
    /// JSON `{"StartTime":ms}`.
    LatencyTest(String),
    RequestInitialSettings,
    TestEcho(String),
    /// App-defined text (the frontend's `emitUIInteraction` sends JSON).
    UiInteraction(String),
    /// JSON, e.g. `{"ConsoleCommand":"stat fps"}` or `{"Resolution.Width":w,"Resolution.Height":h}`.
    Command(String),
    TextboxEntry(String),
    /// `key_code` is a legacy JavaScript `keyCode`.
    KeyDown {
        key_code: u8,
        is_repeat: bool,
    },
    KeyUp {
        key_code: u8,
    },
    KeyPress {
        char_code: u16,
    },
    MouseEnter,
    MouseLeave,
    /// `button`: 0 left, 1 middle, 2 right, 3 back, 4 forward.
    MouseDown {
        button: u8,
        x: u16,
        y: u16,
    },
    MouseUp {
        button: u8,
        x: u16,
        y: u16,
    },
    MouseMove {
        x: u16,
        y: u16,
        delta_x: i16,
        delta_y: i16,
    },
    /// `delta` is the browser's `wheelDelta`.
    MouseWheel {
        delta: i16,
        x: u16,
        y: u16,
    },
    MouseDouble {
        button: u8,
        x: u16,
        y: u16,
    },
    TouchStart(Touch),
    TouchEnd(Touch),
    TouchMove(Touch),
    GamepadButtonPressed(GamepadButton),
    GamepadButtonReleased(GamepadButton),
    /// `axis` is Epic's `button` field of `GamepadAnalog`.
    GamepadAnalog {
        controller_id: u8,
        axis: u8,
        value: f64,
    },
    /// UE answers with `GamepadResponse` carrying the id it assigned.
    GamepadConnected,
    GamepadDisconnected {
        controller_id: u8,
    },
    XrEyeViews(Box<XrEyeViews>),
    XrHmdTransform([f32; 16]),
    XrControllerTransform {
        transform: [f32; 16],
        handedness: u8,
    },
    XrButtonPressed {
        button: XrButton,
        pressed_amount: f64,
    },
    XrButtonTouched(XrButton),
    XrButtonReleased(XrButton),
    XrAnalog {
        handedness: u8,
        button: u8,
        value: f64,
    },
    XrSystem(u8),
    XrButtonTouchReleased(XrButton),
    /// Anything else the table knows: custom messages, or a shape we do not type.
    Other(Decoded),
}

impl InputEvent {
    /// Decodes a ToStreamer message (see [`decode`]) and types it.
    pub fn decode(
        table: &ProtocolTable,
        bytes: &[u8],
        max_len: usize,
    ) -> Result<InputEvent, DecodeError> {
        decode(table, bytes, max_len).map(InputEvent::from_decoded)
    }

    /// Types a decoded message by its name, or keeps it as [`InputEvent::Other`].
    pub fn from_decoded(decoded: Decoded) -> InputEvent {
        typed(&decoded).unwrap_or(InputEvent::Other(decoded))
    }

    /// Encodes this event as Epic's frontend would, with the id and structure `table` gives its
    /// name.
    pub fn encode(&self, table: &ProtocolTable) -> Result<Vec<u8>, EncodeError> {
        encode(table, self.name(), &self.values())
    }

    /// Epic's message name.
    pub fn name(&self) -> &str {
        use InputEvent as E;
        match self {
            E::IFrameRequest => "IFrameRequest",
            E::RequestQualityControl => "RequestQualityControl",
            E::FpsRequest => "FpsRequest",
            E::AverageBitrateRequest => "AverageBitrateRequest",
            E::StartStreaming => "StartStreaming",
            E::StopStreaming => "StopStreaming",
            E::LatencyTest(_) => "LatencyTest",
            E::RequestInitialSettings => "RequestInitialSettings",
            E::TestEcho(_) => "TestEcho",
            E::UiInteraction(_) => "UIInteraction",
            E::Command(_) => "Command",
            E::TextboxEntry(_) => "TextboxEntry",
            E::KeyDown { .. } => "KeyDown",
            E::KeyUp { .. } => "KeyUp",
            E::KeyPress { .. } => "KeyPress",
            E::MouseEnter => "MouseEnter",
            E::MouseLeave => "MouseLeave",
            E::MouseDown { .. } => "MouseDown",
            E::MouseUp { .. } => "MouseUp",
            E::MouseMove { .. } => "MouseMove",
            E::MouseWheel { .. } => "MouseWheel",
            E::MouseDouble { .. } => "MouseDouble",
            E::TouchStart(_) => "TouchStart",
            E::TouchEnd(_) => "TouchEnd",
            E::TouchMove(_) => "TouchMove",
            E::GamepadButtonPressed(_) => "GamepadButtonPressed",
            E::GamepadButtonReleased(_) => "GamepadButtonReleased",
            E::GamepadAnalog { .. } => "GamepadAnalog",
            E::GamepadConnected => "GamepadConnected",
            E::GamepadDisconnected { .. } => "GamepadDisconnected",
            E::XrEyeViews(_) => "XREyeViews",
            E::XrHmdTransform(_) => "XRHMDTransform",
            E::XrControllerTransform { .. } => "XRControllerTransform",
            E::XrButtonPressed { .. } => "XRButtonPressed",
            E::XrButtonTouched(_) => "XRButtonTouched",
            E::XrButtonReleased(_) => "XRButtonReleased",
            E::XrAnalog { .. } => "XRAnalog",
            E::XrSystem(_) => "XRSystem",
            E::XrButtonTouchReleased(_) => "XRButtonTouchReleased",
            E::Other(d) => &d.name,
        }
    }

    /// The field values in wire order, in the types of UE's default table.
    pub fn values(&self) -> Vec<Value> {
        use InputEvent as E;
        use Value::{F32, F64, I16, Str, U8, U16};
        let flag = |b: bool| U8(u8::from(b));
        let floats = |m: &[f32; 16]| m.iter().map(|v| F32(*v)).collect::<Vec<_>>();
        let touch = |t: &Touch| {
            vec![
                U8(1),
                U16(t.x),
                U16(t.y),
                U8(t.idx),
                U8(t.force),
                flag(t.valid),
            ]
        };
        let gamepad =
            |b: &GamepadButton| vec![U8(b.controller_id), U8(b.button), flag(b.is_repeat)];
        let xr = |b: &XrButton| vec![U8(b.handedness), U8(b.button), flag(b.is_repeat)];
        match self {
            E::IFrameRequest
            | E::RequestQualityControl
            | E::FpsRequest
            | E::AverageBitrateRequest
            | E::StartStreaming
            | E::StopStreaming
            | E::RequestInitialSettings
            | E::MouseEnter
            | E::MouseLeave
            | E::GamepadConnected => vec![],
            E::LatencyTest(s)
            | E::TestEcho(s)
            | E::UiInteraction(s)
            | E::Command(s)
            | E::TextboxEntry(s) => vec![Str(s.clone())],
            E::KeyDown {
                key_code,
                is_repeat,
            } => vec![U8(*key_code), flag(*is_repeat)],
            E::KeyUp { key_code } => vec![U8(*key_code)],
            E::KeyPress { char_code } => vec![U16(*char_code)],
            E::MouseDown { button, x, y }
            | E::MouseUp { button, x, y }
            | E::MouseDouble { button, x, y } => vec![U8(*button), U16(*x), U16(*y)],
            E::MouseMove {
                x,
                y,
                delta_x,
                delta_y,
            } => vec![U16(*x), U16(*y), I16(*delta_x), I16(*delta_y)],
            E::MouseWheel { delta, x, y } => vec![I16(*delta), U16(*x), U16(*y)],
            E::TouchStart(t) | E::TouchEnd(t) | E::TouchMove(t) => touch(t),
            E::GamepadButtonPressed(b) | E::GamepadButtonReleased(b) => gamepad(b),
            E::GamepadAnalog {
                controller_id,
                axis,
                value,
            } => vec![U8(*controller_id), U8(*axis), F64(*value)],
            E::GamepadDisconnected { controller_id } => vec![U8(*controller_id)],
            E::XrEyeViews(v) => [
                &v.left_eye_transform,
                &v.left_eye_projection,
                &v.right_eye_transform,
                &v.right_eye_projection,
                &v.hmd_transform,
            ]
            .into_iter()
            .flat_map(floats)
            .collect(),
            E::XrHmdTransform(m) => floats(m),
            E::XrControllerTransform {
                transform,
                handedness,
            } => {
                let mut values = floats(transform);
                values.push(U8(*handedness));
                values
            }
            E::XrButtonPressed {
                button,
                pressed_amount,
            } => {
                let mut values = xr(button);
                values.push(F64(*pressed_amount));
                values
            }
            E::XrButtonTouched(b) | E::XrButtonReleased(b) | E::XrButtonTouchReleased(b) => xr(b),
            E::XrAnalog {
                handedness,
                button,
                value,
            } => vec![U8(*handedness), U8(*button), F64(*value)],
            E::XrSystem(system) => vec![U8(*system)],
            E::Other(d) => d.values(),
        }
    }
}

/// Positional, type-tolerant access to decoded fields.
struct Fields<'a>(&'a [(Cow<'static, str>, Value)]);

impl Fields<'_> {
    fn at(&self, i: usize) -> Option<&Value> {
        self.0.get(i).map(|(_, value)| value)
    }

    fn u8(&self, i: usize) -> Option<u8> {
        self.at(i)?.as_u8()
    }

    fn flag(&self, i: usize) -> Option<bool> {
        self.u8(i).map(|v| v != 0)
    }

    /// A 16-bit field as unsigned, whichever signedness the table gives it.
    fn u16(&self, i: usize) -> Option<u16> {
        match self.at(i)? {
            Value::U16(v) => Some(*v),
            Value::I16(v) => Some(u16::from_le_bytes(v.to_le_bytes())),
            _ => None,
        }
    }

    /// A 16-bit field as signed, whichever signedness the table gives it.
    fn i16(&self, i: usize) -> Option<i16> {
        self.u16(i).map(|v| i16::from_le_bytes(v.to_le_bytes()))
    }

    fn f64(&self, i: usize) -> Option<f64> {
        match self.at(i)? {
            Value::F64(v) => Some(*v),
            Value::F32(v) => Some(f64::from(*v)),
            _ => None,
        }
    }

    fn text(&self, i: usize) -> Option<String> {
        self.at(i)?.as_str().map(str::to_owned)
    }

    fn matrix(&self, start: usize) -> Option<[f32; 16]> {
        let mut out = [0f32; 16];
        for (k, slot) in out.iter_mut().enumerate() {
            *slot = self.at(start + k)?.as_f32()?;
        }
        Some(out)
    }

    fn touch(&self) -> Option<Touch> {
        // Epic's frontend sends one touch per message; UE would loop over more, but their
        // layout is not what the table describes, so any other count stays `Other`.
        (self.u8(0)? == 1).then_some(())?;
        Some(Touch {
            x: self.u16(1)?,
            y: self.u16(2)?,
            idx: self.u8(3)?,
            force: self.u8(4)?,
            valid: self.flag(5)?,
        })
    }

    fn gamepad(&self) -> Option<GamepadButton> {
        Some(GamepadButton {
            controller_id: self.u8(0)?,
            button: self.u8(1)?,
            is_repeat: self.flag(2)?,
        })
    }

    fn xr(&self) -> Option<XrButton> {
        Some(XrButton {
            handedness: self.u8(0)?,
            button: self.u8(1)?,
            is_repeat: self.flag(2)?,
        })
    }
}

fn typed(decoded: &Decoded) -> Option<InputEvent> {
    use InputEvent as E;
    let f = Fields(&decoded.fields);
    let arity = |n: usize| (decoded.fields.len() == n).then_some(());
    Some(match decoded.name.as_str() {
        "IFrameRequest" => arity(0).map(|_| E::IFrameRequest)?,
        "RequestQualityControl" => arity(0).map(|_| E::RequestQualityControl)?,
        "FpsRequest" => arity(0).map(|_| E::FpsRequest)?,
        "AverageBitrateRequest" => arity(0).map(|_| E::AverageBitrateRequest)?,
        "StartStreaming" => arity(0).map(|_| E::StartStreaming)?,
        "StopStreaming" => arity(0).map(|_| E::StopStreaming)?,
        "RequestInitialSettings" => arity(0).map(|_| E::RequestInitialSettings)?,
        "MouseEnter" => arity(0).map(|_| E::MouseEnter)?,
        "MouseLeave" => arity(0).map(|_| E::MouseLeave)?,
        "GamepadConnected" => arity(0).map(|_| E::GamepadConnected)?,
        "LatencyTest" => arity(1).and_then(|_| f.text(0)).map(E::LatencyTest)?,
        "TestEcho" => arity(1).and_then(|_| f.text(0)).map(E::TestEcho)?,
        "UIInteraction" => arity(1).and_then(|_| f.text(0)).map(E::UiInteraction)?,
        "Command" => arity(1).and_then(|_| f.text(0)).map(E::Command)?,
        "TextboxEntry" => arity(1).and_then(|_| f.text(0)).map(E::TextboxEntry)?,
        "KeyDown" => {
            arity(2)?;
            E::KeyDown {
                key_code: f.u8(0)?,
                is_repeat: f.flag(1)?,
            }
        }
        "KeyUp" => {
            arity(1)?;
            E::KeyUp { key_code: f.u8(0)? }
        }
        "KeyPress" => {
            arity(1)?;
            E::KeyPress {
                char_code: f.u16(0)?,
            }
        }
        "MouseDown" | "MouseUp" | "MouseDouble" => {
            arity(3)?;
            let (button, x, y) = (f.u8(0)?, f.u16(1)?, f.u16(2)?);
            match decoded.name.as_str() {
                "MouseDown" => E::MouseDown { button, x, y },
                "MouseUp" => E::MouseUp { button, x, y },
                _ => E::MouseDouble { button, x, y },
            }
        }
        "MouseMove" => {
            arity(4)?;
            E::MouseMove {
                x: f.u16(0)?,
                y: f.u16(1)?,
                delta_x: f.i16(2)?,
                delta_y: f.i16(3)?,
            }
        }
        "MouseWheel" => {
            arity(3)?;
            E::MouseWheel {
                delta: f.i16(0)?,
                x: f.u16(1)?,
                y: f.u16(2)?,
            }
        }
        "TouchStart" => arity(6).and_then(|_| f.touch()).map(E::TouchStart)?,
        "TouchEnd" => arity(6).and_then(|_| f.touch()).map(E::TouchEnd)?,
        "TouchMove" => arity(6).and_then(|_| f.touch()).map(E::TouchMove)?,
        "GamepadButtonPressed" => arity(3)
            .and_then(|_| f.gamepad())
            .map(E::GamepadButtonPressed)?,
        "GamepadButtonReleased" => arity(3)
            .and_then(|_| f.gamepad())
            .map(E::GamepadButtonReleased)?,
        "GamepadAnalog" => {
            arity(3)?;
            E::GamepadAnalog {
                controller_id: f.u8(0)?,
                axis: f.u8(1)?,
                value: f.f64(2)?,
            }
        }
        "GamepadDisconnected" => {
            arity(1)?;
            E::GamepadDisconnected {
                controller_id: f.u8(0)?,
            }
        }
        "XREyeViews" => {
            arity(80)?;
            E::XrEyeViews(Box::new(XrEyeViews {
                left_eye_transform: f.matrix(0)?,
                left_eye_projection: f.matrix(16)?,
                right_eye_transform: f.matrix(32)?,
                right_eye_projection: f.matrix(48)?,
                hmd_transform: f.matrix(64)?,
            }))
        }
        "XRHMDTransform" => arity(16).and_then(|_| f.matrix(0)).map(E::XrHmdTransform)?,
        "XRControllerTransform" => {
            arity(17)?;
            E::XrControllerTransform {
                transform: f.matrix(0)?,
                handedness: f.u8(16)?,
            }
        }
        "XRButtonPressed" => {
            arity(4)?;
            E::XrButtonPressed {
                button: f.xr()?,
                pressed_amount: f.f64(3)?,
            }
        }
        "XRButtonTouched" => arity(3).and_then(|_| f.xr()).map(E::XrButtonTouched)?,
        "XRButtonReleased" => arity(3).and_then(|_| f.xr()).map(E::XrButtonReleased)?,
        "XRButtonTouchReleased" => arity(3)
            .and_then(|_| f.xr())
            .map(E::XrButtonTouchReleased)?,
        "XRAnalog" => {
            arity(3)?;
            E::XrAnalog {
                handedness: f.u8(0)?,
                button: f.u8(1)?,
                value: f.f64(2)?,
            }
        }
        "XRSystem" => arity(1).and_then(|_| f.u8(0)).map(E::XrSystem)?,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::EPIC_MAX_MESSAGE_LEN as MAX;
    use super::super::table::MessageSpec;
    use super::super::wire::FieldType;
    use super::*;
    use rstest::rstest;

    fn table() -> ProtocolTable {
        ProtocolTable::default_to_streamer()
    }

    fn matrix(base: f32) -> [f32; 16] {
        std::array::from_fn(|i| base + i as f32 / 4.0)
    }

    fn every_event() -> Vec<InputEvent> {
        use InputEvent as E;
        let touch = Touch {
            x: 100,
            y: 65535,
            idx: 2,
            force: 128,
            valid: true,
        };
        let pad = GamepadButton {
            controller_id: 1,
            button: 12,
            is_repeat: true,
        };
        let xr = XrButton {
            handedness: 1,
            button: 4,
            is_repeat: false,
        };
        vec![
            E::IFrameRequest,
            E::RequestQualityControl,
            E::FpsRequest,
            E::AverageBitrateRequest,
            E::StartStreaming,
            E::StopStreaming,
            E::LatencyTest(r#"{"StartTime":1764039000123}"#.into()),
            E::RequestInitialSettings,
            E::TestEcho("echo 😀".into()),
            E::UiInteraction(r#"{"Console":"x"}"#.into()),
            E::Command(r#"{"ConsoleCommand":"stat fps"}"#.into()),
            E::TextboxEntry("typed".into()),
            E::KeyDown {
                key_code: 65,
                is_repeat: true,
            },
            E::KeyUp { key_code: 65 },
            E::KeyPress { char_code: 0x20AC },
            E::MouseEnter,
            E::MouseLeave,
            E::MouseDown {
                button: 0,
                x: 16384,
                y: 49152,
            },
            E::MouseUp {
                button: 2,
                x: 1,
                y: 2,
            },
            E::MouseMove {
                x: 3,
                y: 4,
                delta_x: -32767,
                delta_y: 32767,
            },
            E::MouseWheel {
                delta: -120,
                x: 5,
                y: 6,
            },
            E::MouseDouble {
                button: 1,
                x: 7,
                y: 8,
            },
            E::TouchStart(touch),
            E::TouchEnd(Touch {
                valid: false,
                ..touch
            }),
            E::TouchMove(touch),
            E::GamepadButtonPressed(pad),
            E::GamepadButtonReleased(GamepadButton {
                is_repeat: false,
                ..pad
            }),
            E::GamepadAnalog {
                controller_id: 0,
                axis: 3,
                value: -0.75,
            },
            E::GamepadConnected,
            E::GamepadDisconnected { controller_id: 3 },
            E::XrEyeViews(Box::new(XrEyeViews {
                left_eye_transform: matrix(1.0),
                left_eye_projection: matrix(2.0),
                right_eye_transform: matrix(3.0),
                right_eye_projection: matrix(4.0),
                hmd_transform: matrix(5.0),
            })),
            E::XrHmdTransform(matrix(6.0)),
            E::XrControllerTransform {
                transform: matrix(7.0),
                handedness: 2,
            },
            E::XrButtonPressed {
                button: xr,
                pressed_amount: 0.5,
            },
            E::XrButtonTouched(xr),
            E::XrButtonReleased(xr),
            E::XrAnalog {
                handedness: 0,
                button: 2,
                value: 1.0,
            },
            E::XrSystem(2),
            E::XrButtonTouchReleased(xr),
        ]
    }

    #[test]
    fn every_typed_event_round_trips_through_the_default_table() {
        let table = table();
        let events = every_event();
        for event in &events {
            let bytes = event.encode(&table).unwrap();
            assert_eq!(
                bytes[0],
                table.id_of(event.name()).unwrap(),
                "{}",
                event.name()
            );
            let back = InputEvent::decode(&table, &bytes, MAX).unwrap();
            assert_eq!(&back, event);
        }
        // Every typed name of the default table is covered, each once.
        let mut names: Vec<&str> = events.iter().map(InputEvent::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 39);
    }

    #[rstest]
    #[case(InputEvent::MouseDown { button: 0, x: 16384, y: 49152 }, vec![72, 0, 0x00, 0x40, 0x00, 0xC0])]
    #[case(InputEvent::KeyDown { key_code: 13, is_repeat: false }, vec![60, 13, 0])]
    #[case(InputEvent::UiInteraction("ok".into()), vec![50, 2, 0, b'o', 0, b'k', 0])]
    #[case(InputEvent::TouchStart(Touch { x: 1, y: 2, idx: 0, force: 255, valid: true }), vec![80, 1, 1, 0, 2, 0, 0, 255, 1])]
    #[case(InputEvent::GamepadButtonPressed(GamepadButton { controller_id: 0, button: 1, is_repeat: false }), vec![90, 0, 1, 0])]
    #[case(InputEvent::RequestInitialSettings, vec![7])]
    fn typed_events_encode_like_epics_frontend(#[case] event: InputEvent, #[case] bytes: Vec<u8>) {
        assert_eq!(event.encode(&table()).unwrap(), bytes);
    }

    #[test]
    fn mouse_deltas_are_signed_under_ues_uint16_structure() {
        use FieldType::Uint16;
        let mut ue = table();
        ue.insert("MouseMove", MessageSpec::new(74, vec![Uint16; 4]))
            .unwrap();
        let event = InputEvent::MouseMove {
            x: 10,
            y: 20,
            delta_x: -5,
            delta_y: -32768,
        };
        let bytes = event.encode(&ue).unwrap();
        assert_eq!(
            bytes,
            event.encode(&table()).unwrap(),
            "same bytes either way"
        );
        assert_eq!(bytes, [74, 10, 0, 20, 0, 0xFB, 0xFF, 0x00, 0x80]);
        assert_eq!(InputEvent::decode(&ue, &bytes, MAX).unwrap(), event);
    }

    #[test]
    fn untyped_shapes_are_kept_as_other() {
        let t = table();
        // Two touches in one message: not the table's layout.
        let bytes = [80, 2, 0, 0, 0, 0, 0, 0, 1];
        match InputEvent::decode(&t, &bytes, MAX).unwrap() {
            InputEvent::Other(d) => assert_eq!(d.get("numTouches"), Some(&Value::U8(2))),
            other => panic!("typed as {other:?}"),
        }
        // A custom message, and a known name with a changed structure.
        let mut custom = table();
        custom
            .add_custom("MyCustom", vec![FieldType::Uint8, FieldType::Double])
            .unwrap();
        custom
            .insert("KeyUp", MessageSpec::new(61, vec![FieldType::String]))
            .unwrap();
        for bytes in [
            vec![200, 7, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F],
            vec![61, 1, 0, b'a', 0],
        ] {
            let event = InputEvent::decode(&custom, &bytes, MAX).unwrap();
            assert!(matches!(event, InputEvent::Other(_)), "{event:?}");
            // Other encodes back to the same bytes.
            assert_eq!(event.encode(&custom).unwrap(), bytes);
        }
    }

    #[test]
    fn encoding_a_name_the_table_lacks_is_an_error() {
        let mut t = table();
        t.remove("KeyPress");
        assert_eq!(
            InputEvent::KeyPress { char_code: 97 }.encode(&t),
            Err(EncodeError::UnknownName("KeyPress".into()))
        );
        assert_eq!(
            InputEvent::decode(&t, &[62, 97, 0], MAX),
            Err(DecodeError::UnknownId(62))
        );
    }
}
