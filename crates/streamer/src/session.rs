//! The data-channel protocol of one player, as UE's Pixel Streaming plugin speaks it
//! (`docs/streamer.md`, "Data channel"): pure logic, bytes in, replies and decisions out.
//!
//! On open the streamer announces its two tables (`Protocol`, id 255: ToStreamer then
//! FromStreamer) and gives the player input control. Every ToStreamer message is decoded by the
//! table in effect (ours: we announce it, so the player encodes by it). Malformed messages and
//! unknown ids are counted and logged, never fatal.

use crate::pattern::Overlay;
use pxs_protocol::datachannel::{self, DecodeError, Decoded, FromStreamer, ProtocolTable, Value};
use pxs_protocol::signalling::PlayerId;
use serde::Serialize;
use serde::ser::SerializeMap;

/// The largest message we accept (Epic's 16 KiB chunking limit, with room for a long UTF-16
/// UIInteraction string).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// What the streamer should do because of a message.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `IFrameRequest`.
    Keyframe,
    /// `Command {"Resolution.Width":w,"Resolution.Height":h}`.
    Resize(u32, u32),
    /// `Command {"WebRTC.Fps":n}` / `{"WebRTC.MaxFps":n}`.
    SetFps(u32),
    /// `RequestQualityControl`: this player wants to own quality.
    QualityControl,
    /// Input to draw: applied to the shared overlay.
    Pointer(u16, u16),
    Key(u16),
    Click,
    /// `StartStreaming` / `StopStreaming`.
    Streaming(bool),
}

/// One line of `--input-log`: `{"player_id":"Player0","id":72,"name":"MouseDown",
/// "fields":{"button":0,"x":16384,"y":49152}}`, fields in wire order.
#[derive(Clone, Debug, PartialEq)]
pub struct InputRecord {
    pub player_id: PlayerId,
    pub decoded: Decoded,
}

impl Serialize for InputRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Fields<'a>(&'a Decoded);
        impl Serialize for Fields<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.fields.len()))?;
                for (name, value) in &self.0.fields {
                    match value {
                        Value::U8(v) => m.serialize_entry(name.as_ref(), v)?,
                        Value::U16(v) => m.serialize_entry(name.as_ref(), v)?,
                        Value::I16(v) => m.serialize_entry(name.as_ref(), v)?,
                        Value::F32(v) => {
                            m.serialize_entry(name.as_ref(), &finite(f64::from(*v)))?
                        }
                        Value::F64(v) => m.serialize_entry(name.as_ref(), &finite(*v))?,
                        Value::Str(v) => m.serialize_entry(name.as_ref(), v)?,
                    }
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("player_id", &self.player_id)?;
        m.serialize_entry("id", &self.decoded.id)?;
        m.serialize_entry("name", &self.decoded.name)?;
        m.serialize_entry("fields", &Fields(&self.decoded))?;
        m.end()
    }
}

/// JSON has no NaN or infinity: those are logged as null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl InputRecord {
    pub fn to_json_line(&self) -> String {
        // Serializing strings, integers and finite floats into a String cannot fail.
        serde_json::to_string(self).expect("input record serializes")
    }
}

/// What the streamer tells players about itself in `InitialSettings`.
#[derive(Clone, Debug)]
pub struct StreamerInfo {
    pub allow_commands: bool,
    pub disable_latency_tester: bool,
    pub fps: u32,
    pub bitrate_bps: u32,
}

/// Timings the latency test reports, from the most recent encoded frame.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameTimings {
    pub encode_ms: f64,
    /// From capture to the frame being handed to the network.
    pub capture_to_send_ms: f64,
}

/// The result of one received message.
#[derive(Debug, Default, PartialEq)]
pub struct Handled {
    /// Messages to send back to this player, encoded.
    pub replies: Vec<Vec<u8>>,
    /// The decoded message, for the input log.
    pub record: Option<InputRecord>,
    pub actions: Vec<Action>,
}

/// Per-player data-channel state.
pub struct InputSession {
    player: PlayerId,
    to_streamer: ProtocolTable,
    from_streamer: ProtocolTable,
    next_gamepad: u8,
    pub unknown_ids: u64,
    pub rejected: u64,
}

impl InputSession {
    pub fn new(player: PlayerId) -> Self {
        InputSession {
            player,
            to_streamer: ProtocolTable::default_to_streamer(),
            from_streamer: ProtocolTable::default_from_streamer(),
            next_gamepad: 0,
            unknown_ids: 0,
            rejected: 0,
        }
    }

    /// The messages to send when the channel opens: both Protocol tables, then input control.
    pub fn on_open(&self) -> Vec<Vec<u8>> {
        let mut out = match FromStreamer::protocol_messages(&self.to_streamer, &self.from_streamer)
        {
            Ok(msgs) => msgs.to_vec(),
            Err(e) => {
                tracing::error!("cannot encode our Protocol messages: {e}");
                Vec::new()
            }
        };
        out.push(self.reply(&FromStreamer::InputControlOwnership(true)));
        out.retain(|m| !m.is_empty());
        out
    }

    /// Encodes a message for this player (empty if our own table lacks it, which is a bug).
    pub fn reply(&self, msg: &FromStreamer) -> Vec<u8> {
        match msg.encode(&self.from_streamer) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!("cannot encode {msg:?}: {e}");
                Vec::new()
            }
        }
    }

    /// Handles one received message. `now_ms` is the wall clock (ms since the Unix epoch).
    pub fn on_message(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
        info: &StreamerInfo,
        timings: FrameTimings,
    ) -> Handled {
        let mut h = Handled::default();
        let decoded = match datachannel::decode(&self.to_streamer, bytes, MAX_MESSAGE_LEN) {
            Ok(d) => d,
            Err(DecodeError::UnknownId(id)) => {
                self.unknown_ids += 1;
                tracing::warn!(
                    id,
                    count = self.unknown_ids,
                    "unknown data-channel message id"
                );
                return h;
            }
            Err(e) => {
                self.rejected += 1;
                tracing::warn!(count = self.rejected, "rejected data-channel message: {e}");
                return h;
            }
        };
        let text = || decoded.get("text").and_then(Value::as_str).unwrap_or("");
        let u16_of = |f: &str| -> Option<u16> {
            match decoded.get(f)? {
                Value::U8(v) => Some(u16::from(*v)),
                Value::U16(v) => Some(*v),
                _ => None,
            }
        };
        match decoded.name.as_str() {
            "IFrameRequest" => h.actions.push(Action::Keyframe),
            "RequestQualityControl" => h.actions.push(Action::QualityControl),
            "StartStreaming" => h.actions.push(Action::Streaming(true)),
            "StopStreaming" => h.actions.push(Action::Streaming(false)),
            "RequestInitialSettings" => {
                let settings = serde_json::json!({
                    "PixelStreaming": {
                        "AllowPixelStreamingCommands": info.allow_commands,
                        "DisableLatencyTest": info.disable_latency_tester,
                    },
                    "Encoder": {
                        "TargetBitrate": info.bitrate_bps,
                        "MaxBitrate": info.bitrate_bps,
                        "MinQP": 0, "MaxQP": 51,
                        "MinQuality": 0, "MaxQuality": 100,
                        "RateControl": "CBR", "FillerData": false, "MultiPass": "DISABLED",
                    },
                    "WebRTC": {
                        "DegradationPref": "MAINTAIN_FRAMERATE",
                        "FPS": info.fps, "MaxFPS": info.fps,
                        "MinBitrate": 100_000, "MaxBitrate": info.bitrate_bps,
                        "LowQP": 25, "HighQP": 37,
                    },
                    "ConfigOptions": {},
                });
                h.replies
                    .push(self.reply(&FromStreamer::InitialSettings(settings.to_string())));
            }
            // Byte for byte what UE sends back (see `FromStreamer::ue_test_echo`).
            "TestEcho" => match FromStreamer::ue_test_echo(&self.from_streamer, bytes) {
                Ok(reply) => h.replies.push(reply),
                Err(e) => tracing::error!("cannot encode TestEcho: {e}"),
            },
            "UIInteraction" => {
                // The app-defined reply: the same descriptor back, so a client can check the
                // round trip.
                h.replies
                    .push(self.reply(&FromStreamer::Response(text().to_owned())));
            }
            "LatencyTest" if !info.disable_latency_tester => {
                let start: Option<f64> = serde_json::from_str::<serde_json::Value>(text())
                    .ok()
                    .and_then(|v| v.get("StartTime").and_then(serde_json::Value::as_f64));
                let receipt = now_ms as f64;
                let reply = serde_json::json!({
                    "StartTime": start,
                    "ReceiptTimeMs": receipt,
                    "EncodeMs": timings.encode_ms,
                    "CaptureToSendMs": timings.capture_to_send_ms,
                    "PreCaptureTimeMs": receipt,
                    "PostCaptureTimeMs": receipt,
                    "PreEncodeTimeMs": receipt,
                    "PostEncodeTimeMs": receipt + timings.encode_ms,
                    "TransmissionTimeMs": receipt + timings.capture_to_send_ms,
                });
                h.replies
                    .push(self.reply(&FromStreamer::LatencyTest(reply.to_string())));
            }
            "Command" => self.command(text(), info, &mut h),
            "GamepadConnected" => {
                let id = self.next_gamepad;
                self.next_gamepad = self.next_gamepad.wrapping_add(1);
                h.replies
                    .push(self.reply(&FromStreamer::gamepad_response(id)));
            }
            "KeyDown" | "KeyUp" => {
                if let Some(k) = u16_of("keyCode") {
                    h.actions.push(Action::Key(k));
                }
            }
            "KeyPress" => {
                if let Some(k) = u16_of("charCode") {
                    h.actions.push(Action::Key(k));
                }
            }
            "MouseDown" | "MouseUp" | "MouseMove" | "MouseWheel" | "MouseDouble" | "TouchStart"
            | "TouchMove" | "TouchEnd" => {
                if let (Some(x), Some(y)) = (u16_of("x"), u16_of("y")) {
                    h.actions.push(Action::Pointer(x, y));
                }
                if matches!(decoded.name.as_str(), "MouseDown" | "TouchStart") {
                    h.actions.push(Action::Click);
                }
            }
            _ => {}
        }
        h.record = Some(InputRecord {
            player_id: self.player.clone(),
            decoded,
        });
        h
    }

    fn command(&self, text: &str, info: &StreamerInfo, h: &mut Handled) {
        let Ok(serde_json::Value::Object(cmd)) = serde_json::from_str::<serde_json::Value>(text)
        else {
            tracing::warn!("Command is not a JSON object");
            return;
        };
        let num = |k: &str| {
            cmd.get(k)
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
        };
        if let (Some(w), Some(hh)) = (num("Resolution.Width"), num("Resolution.Height")) {
            let (w, hh) = (w as u64, hh as u64);
            if crate::flags::valid_resolution(w, hh) {
                h.actions.push(Action::Resize(w as u32, hh as u32));
            } else {
                tracing::warn!(
                    w,
                    h = hh,
                    "ignoring a resolution we cannot encode (even, 64..=4096)"
                );
            }
        }
        if let Some(fps) = num("WebRTC.Fps").or_else(|| num("WebRTC.MaxFps"))
            && (1.0..=240.0).contains(&fps)
        {
            h.actions.push(Action::SetFps(fps as u32));
        }
        if let Some(c) = cmd.get("ConsoleCommand") {
            if info.allow_commands {
                tracing::info!("console command (not executed by the stand-in): {c}");
            } else {
                tracing::warn!("refused console command (no -AllowPixelStreamingCommands)");
            }
        }
    }
}

/// Applies input actions to the overlay; returns whether it changed.
pub fn apply_to_overlay(overlay: &mut Overlay, actions: &[Action], name: &str) -> bool {
    let before = overlay.clone();
    let mut input = false;
    for a in actions {
        match a {
            Action::Pointer(x, y) => {
                overlay.pointer = Some((*x, *y));
                input = true;
            }
            Action::Key(k) => {
                overlay.last_key = Some(*k);
                input = true;
            }
            Action::Click => overlay.clicks += 1,
            _ => {}
        }
    }
    if input {
        overlay.last_input = Some(name.to_owned());
    }
    *overlay != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use pxs_protocol::datachannel::encode;
    use rstest::rstest;

    fn info() -> StreamerInfo {
        StreamerInfo {
            allow_commands: false,
            disable_latency_tester: false,
            fps: 30,
            bitrate_bps: 1_000_000,
        }
    }

    fn handle(s: &mut InputSession, name: &str, values: &[Value]) -> Handled {
        let bytes = encode(&ProtocolTable::default_to_streamer(), name, values).unwrap();
        s.on_message(&bytes, 1_000, &info(), FrameTimings::default())
    }

    fn from(bytes: &[u8]) -> FromStreamer {
        FromStreamer::decode(&ProtocolTable::default_from_streamer(), bytes, 1 << 20).unwrap()
    }

    #[rstest]
    #[case("MouseDown", vec![Value::U8(0), Value::U16(16384), Value::U16(49152)],
        r#"{"player_id":"Player0","id":72,"name":"MouseDown","fields":{"button":0,"x":16384,"y":49152}}"#)]
    #[case("KeyDown", vec![Value::U8(65), Value::U8(1)],
        r#"{"player_id":"Player0","id":60,"name":"KeyDown","fields":{"keyCode":65,"isRepeat":1}}"#)]
    #[case("KeyPress", vec![Value::U16(97)],
        r#"{"player_id":"Player0","id":62,"name":"KeyPress","fields":{"charCode":97}}"#)]
    #[case("MouseMove", vec![Value::U16(1), Value::U16(2), Value::I16(-3), Value::I16(4)],
        r#"{"player_id":"Player0","id":74,"name":"MouseMove","fields":{"x":1,"y":2,"deltaX":-3,"deltaY":4}}"#)]
    #[case("MouseWheel", vec![Value::I16(-120), Value::U16(5), Value::U16(6)],
        r#"{"player_id":"Player0","id":75,"name":"MouseWheel","fields":{"delta":-120,"x":5,"y":6}}"#)]
    #[case("GamepadAnalog", vec![Value::U8(0), Value::U8(2), Value::F64(0.5)],
        r#"{"player_id":"Player0","id":92,"name":"GamepadAnalog","fields":{"controllerId":0,"button":2,"analogValue":0.5}}"#)]
    #[case("UIInteraction", vec![Value::Str("{\"a\":1}".into())],
        r#"{"player_id":"Player0","id":50,"name":"UIInteraction","fields":{"text":"{\"a\":1}"}}"#)]
    #[case("MouseEnter", vec![],
        r#"{"player_id":"Player0","id":70,"name":"MouseEnter","fields":{}}"#)]
    fn input_log_lines_have_epics_field_names_in_wire_order(
        #[case] name: &str,
        #[case] values: Vec<Value>,
        #[case] line: &str,
    ) {
        let mut s = InputSession::new("Player0".into());
        let h = handle(&mut s, name, &values);
        assert_eq!(h.record.expect("decoded").to_json_line(), line);
    }

    #[test]
    fn open_announces_both_tables_then_input_control() {
        let s = InputSession::new("P".into());
        let msgs: Vec<FromStreamer> = s.on_open().iter().map(|m| from(m)).collect();
        assert_eq!(msgs.len(), 3);
        let FromStreamer::Protocol(to) = &msgs[0] else {
            panic!()
        };
        let FromStreamer::Protocol(fr) = &msgs[1] else {
            panic!()
        };
        assert!(to.contains("\"Direction\":0") && to.contains("\"MouseDown\""));
        assert!(fr.contains("\"Direction\":1") && fr.contains("\"InputControlOwnership\""));
        assert_eq!(msgs[2], FromStreamer::InputControlOwnership(true));
    }

    #[test]
    fn requests_get_ues_replies() {
        let mut s = InputSession::new("P".into());
        let h = handle(&mut s, "RequestInitialSettings", &[]);
        let FromStreamer::InitialSettings(json) = from(&h.replies[0]) else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["PixelStreaming"]["AllowPixelStreamingCommands"], false);
        assert_eq!(v["WebRTC"]["FPS"], 30);

        let h = handle(&mut s, "UIInteraction", &[Value::Str("hi".into())]);
        assert_eq!(from(&h.replies[0]), FromStreamer::Response("hi".into()));

        let h = handle(
            &mut s,
            "LatencyTest",
            &[Value::Str("{\"StartTime\":900}".into())],
        );
        let FromStreamer::LatencyTest(json) = from(&h.replies[0]) else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["ReceiptTimeMs"], 1000.0);
        assert_eq!(v["StartTime"], 900.0);

        for expect in [0, 1] {
            let h = handle(&mut s, "GamepadConnected", &[]);
            assert_eq!(from(&h.replies[0]), FromStreamer::gamepad_response(expect));
        }
        assert_eq!(
            handle(&mut s, "RequestQualityControl", &[]).actions,
            vec![Action::QualityControl]
        );
        assert_eq!(
            handle(&mut s, "IFrameRequest", &[]).actions,
            vec![Action::Keyframe]
        );
        let h = handle(&mut s, "TestEcho", &[Value::Str("echo".into())]);
        assert_eq!(h.replies.len(), 1);
        assert_eq!(h.replies[0][0], 11);
    }

    #[test]
    fn commands_resize_and_change_fps_within_limits() {
        let mut s = InputSession::new("P".into());
        let cmd = |s: &mut InputSession, json: &str| {
            handle(s, "Command", &[Value::Str(json.into())]).actions
        };
        assert_eq!(
            cmd(
                &mut s,
                r#"{"Resolution.Width":640,"Resolution.Height":360}"#
            ),
            vec![Action::Resize(640, 360)]
        );
        assert_eq!(
            cmd(
                &mut s,
                r#"{"Resolution.Width":641,"Resolution.Height":360}"#
            ),
            vec![]
        );
        assert_eq!(
            cmd(&mut s, r#"{"WebRTC.Fps":60,"WebRTC.MaxFps":60}"#),
            vec![Action::SetFps(60)]
        );
        assert_eq!(cmd(&mut s, r#"{"ConsoleCommand":"stat fps"}"#), vec![]);
        assert_eq!(cmd(&mut s, "not json"), vec![]);
    }

    #[test]
    fn bad_messages_are_counted_never_fatal() {
        let mut s = InputSession::new("P".into());
        let i = info();
        let t = FrameTimings::default();
        assert_eq!(s.on_message(&[], 0, &i, t), Handled::default());
        assert_eq!(s.on_message(&[200, 1, 2], 0, &i, t), Handled::default());
        assert_eq!(s.unknown_ids, 1);
        // MouseDown cut short, and with a byte too many.
        assert_eq!(s.on_message(&[72, 0, 1], 0, &i, t), Handled::default());
        assert_eq!(
            s.on_message(&[72, 0, 0, 64, 0, 192, 9], 0, &i, t),
            Handled::default()
        );
        // A string whose length prefix overruns, and an oversized message.
        assert_eq!(
            s.on_message(&[50, 100, 0, 65, 0], 0, &i, t),
            Handled::default()
        );
        assert_eq!(
            s.on_message(&vec![50; MAX_MESSAGE_LEN + 1], 0, &i, t),
            Handled::default()
        );
        assert_eq!(s.rejected, 5);
    }

    #[test]
    fn overlay_follows_pointer_keys_and_clicks() {
        let mut o = Overlay::default();
        assert!(apply_to_overlay(
            &mut o,
            &[Action::Pointer(1, 2), Action::Click],
            "MouseDown"
        ));
        assert!(apply_to_overlay(&mut o, &[Action::Key(65)], "KeyDown"));
        assert!(!apply_to_overlay(
            &mut o,
            &[Action::Keyframe],
            "IFrameRequest"
        ));
        assert_eq!(o.pointer, Some((1, 2)));
        assert_eq!((o.last_key, o.clicks), (Some(65), 1));
        assert_eq!(o.last_input.as_deref(), Some("KeyDown"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut s = InputSession::new("P".into());
            let _ = s.on_message(&bytes, 0, &info(), FrameTimings::default());
        }
    }
}
