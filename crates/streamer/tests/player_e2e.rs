//! End to end: the real signalling server, the streamer, and a real WebRTC player built on
//! str0m. The player receives and decodes H.264 and the Opus tone, sends input over the data
//! channel, and the streamer's input log shows exactly what was sent.

mod common;

use common::{Player, signalling_server, temp_path, wait_until, wall_ms};
use pxs_protocol::datachannel::{FromStreamer, Value};
use pxs_streamer::{Codec, Settings};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_receives_video_and_its_input_is_decoded() {
    let server = signalling_server().await;
    let addrs = server.addrs();
    let input_log = temp_path("e2e-input.jsonl");
    let settings = Settings {
        signalling_url: format!("ws://{}", addrs.streamer),
        streamer_id: "E2E".into(),
        width: 640,
        height: 360,
        max_fps: 30,
        input_log: Some(input_log.clone()),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let streamer = tokio::spawn(pxs_streamer::run(settings, async {
        let _ = stop_rx.await;
    }));

    let mut player = Player::subscribe(addrs.player, "E2E").await;
    player
        .run_until(
            WAIT,
            "30 frames, 3 decoded, 50 audio packets, data channel and Protocol",
            |p| {
                p.frames >= 30
                    && p.audio.packets >= 50
                    && p.decoded.len() >= 3
                    && p.count(|m| matches!(m, FromStreamer::Protocol(_))) >= 2
                    && p.count(|m| matches!(m, FromStreamer::InputControlOwnership(true))) >= 1
            },
        )
        .await;

    // The offer came with our player id, and the channel is Epic's.
    assert_eq!(player.player_id.as_deref(), Some("Player0"));
    assert_eq!(player.channel_label.as_deref(), Some("datachannel"));
    let offer = player
        .signalling
        .iter()
        .find(|m| m["type"] == "offer")
        .expect("offer");
    let sdp = offer["sdp"].as_str().expect("sdp");
    assert!(sdp.contains("profile-level-id=42e01f"), "{sdp}");
    assert!(sdp.contains("packetization-mode=1"), "{sdp}");
    assert!(
        sdp.contains("typ host"),
        "the streamer offers its host candidate: {sdp}"
    );
    // As UE: video, audio, then the data channel.
    let kinds: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(kinds, ["video", "audio", "application"], "{sdp}");
    assert!(sdp.contains("a=rtpmap:111 opus/48000/2"), "{sdp}");

    // The tone: Opus on the audio mid, every packet decodes, at its level (-30 dBFS peak is
    // -33 dBFS RMS for a sine).
    let audio = &player.audio;
    assert_eq!(audio.codec.as_deref(), Some("opus"), "{audio:?}");
    assert_eq!(audio.errors, 0, "{audio:?}");
    assert_eq!(audio.decoded, audio.packets, "{audio:?}");
    assert_eq!(
        audio.samples,
        audio.packets * 960,
        "20 ms packets: {audio:?}"
    );
    let rms = audio.rms_dbfs().expect("decoded audio measured");
    assert!(
        (-36.0..=-30.0).contains(&rms),
        "tone at {rms:.1} dBFS RMS: {audio:?}"
    );
    eprintln!(
        "audio: {} packets on mid {:?}, {:.1} dBFS RMS, peak {}",
        audio.packets, audio.mid, rms, audio.peak
    );

    // Valid H.264 at the requested size, and the strip reads back frame numbers and times.
    assert!(player.keyframes_seen >= 1);
    for f in &player.decoded {
        assert_eq!((f.width, f.height), (640, 360));
        let strip = f
            .strip
            .expect("the timestamp strip decodes from the received video");
        let age = f.decoded_at_ms as i64 - strip.wall_ms as i64;
        assert!(
            (0..5_000).contains(&age),
            "glass-to-glass {age} ms is implausible"
        );
    }
    let numbers: Vec<u32> = player
        .decoded
        .iter()
        .filter_map(|f| f.strip)
        .map(|s| s.frame)
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "frame numbers increase: {numbers:?}"
    );
    let latency: Vec<i64> = player
        .decoded
        .iter()
        .filter_map(|f| f.strip.map(|s| f.decoded_at_ms as i64 - s.wall_ms as i64))
        .collect();
    eprintln!("encode-to-decode latency (ms) of the decoded frames: {latency:?}");

    // The frontend's requests after Protocol.
    player.send_input("RequestInitialSettings", &[]);
    player.send_input("RequestQualityControl", &[]);
    player
        .run_until(WAIT, "InitialSettings and QualityControlOwnership", |p| {
            p.count(|m| matches!(m, FromStreamer::InitialSettings(_))) >= 1
                && p.count(|m| matches!(m, FromStreamer::QualityControlOwnership(true))) >= 1
        })
        .await;
    let settings_json = player
        .from_streamer
        .iter()
        .find_map(|m| match m {
            FromStreamer::InitialSettings(s) => Some(s.clone()),
            _ => None,
        })
        .expect("InitialSettings");
    let v: serde_json::Value = serde_json::from_str(&settings_json).expect("InitialSettings JSON");
    assert!(
        v["PixelStreaming"]["AllowPixelStreamingCommands"].is_boolean(),
        "{v}"
    );

    // Input, as the frontend encodes it.
    let ui = r#"{"action":"jump","height":3}"#;
    player.send_input(
        "MouseDown",
        &[Value::U8(0), Value::U16(16384), Value::U16(49152)],
    );
    player.send_input("KeyDown", &[Value::U8(65), Value::U8(0)]);
    player.send_input("UIInteraction", &[Value::Str(ui.into())]);
    player.send_input("GamepadConnected", &[]);
    player
        .run_until(WAIT, "Response and GamepadResponse", |p| {
            p.count(|m| matches!(m, FromStreamer::Response(_))) >= 1
                && p.count(|m| matches!(m, FromStreamer::GamepadResponse(_))) >= 1
        })
        .await;
    assert!(
        player
            .from_streamer
            .contains(&FromStreamer::Response(ui.into())),
        "UIInteraction came back as a Response"
    );
    assert!(
        player
            .from_streamer
            .contains(&FromStreamer::GamepadResponse(
                r#"{"controllerId":0}"#.into()
            ))
    );

    // The input log shows exactly what was sent, field for field.
    let lines: Vec<serde_json::Value> = wait_until(WAIT, || {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&input_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        std::future::ready(if lines.len() >= 6 {
            Ok(lines)
        } else {
            Err(format!("{} lines in the input log", lines.len()))
        })
    })
    .await;
    let text = std::fs::read_to_string(&input_log).expect("input log");
    let raw: Vec<&str> = text.lines().collect();
    assert_eq!(
        raw[2],
        r#"{"player_id":"Player0","id":72,"name":"MouseDown","fields":{"button":0,"x":16384,"y":49152}}"#
    );
    assert_eq!(
        raw[3],
        r#"{"player_id":"Player0","id":60,"name":"KeyDown","fields":{"keyCode":65,"isRepeat":0}}"#
    );
    assert_eq!(
        lines[4],
        serde_json::json!({"player_id":"Player0","id":50,"name":"UIInteraction","fields":{"text":ui}})
    );
    assert_eq!(lines[0]["name"], "RequestInitialSettings");
    assert_eq!(lines[0]["fields"], serde_json::json!({}));
    assert_eq!(lines[1]["name"], "RequestQualityControl");
    assert_eq!(lines[5]["name"], "GamepadConnected");

    // About once a second, the mean slice QP of the H.264 frames (0..=51).
    let qps = player.avg_qps(WAIT).await;
    assert!(qps.iter().all(|q| *q <= 51), "{qps:?}");
    eprintln!("VideoEncoderAvgQP (H.264): {qps:?}");

    // IFrameRequest forces a keyframe.
    let before = player.keyframes_seen;
    player.send_input("IFrameRequest", &[]);
    player
        .run_until(WAIT, "a keyframe after IFrameRequest", |p| {
            p.keyframes_seen > before
        })
        .await;

    // A resolution command changes the encoded size.
    player.decode_limit = usize::MAX;
    player.send_input(
        "Command",
        &[Value::Str(
            r#"{"Resolution.Width":320,"Resolution.Height":180}"#.into(),
        )],
    );
    player
        .run_until(WAIT, "a 320x180 frame", |p| {
            p.decoded.iter().any(|f| (f.width, f.height) == (320, 180))
        })
        .await;

    let _ = stop_tx.send(());
    streamer
        .await
        .expect("streamer task")
        .expect("streamer ran cleanly");
    let _ = wall_ms();
    let _ = std::fs::remove_file(&input_log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_players_at_once_each_get_video_and_their_own_ids() {
    let server = signalling_server().await;
    let addrs = server.addrs();
    let input_log = temp_path("multi-input.jsonl");
    let settings = Settings {
        signalling_url: format!("ws://{}", addrs.streamer),
        width: 320,
        height: 180,
        input_log: Some(input_log.clone()),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let streamer = tokio::spawn(pxs_streamer::run(settings, async {
        let _ = stop_rx.await;
    }));
    let mut a = Player::subscribe(addrs.player, "DefaultStreamer").await;
    let mut b = Player::subscribe(addrs.player, "DefaultStreamer").await;
    for p in [&mut a, &mut b] {
        p.run_until(WAIT, "10 frames and the channel", |p| {
            p.frames >= 10 && p.count(|m| matches!(m, FromStreamer::Protocol(_))) >= 2
        })
        .await;
    }
    // Both keep receiving while the other is connected.
    let (fa, fb) = (a.frames, b.frames);
    a.run_until(WAIT, "more frames for A", |p| p.frames >= fa + 10)
        .await;
    b.run_until(WAIT, "more frames for B", |p| p.frames >= fb + 10)
        .await;
    assert_ne!(a.player_id, b.player_id);
    for p in [&a, &b] {
        assert!(p.decoded.iter().all(|f| (f.width, f.height) == (320, 180)));
    }
    // Input is attributed to the right player.
    b.send_input("KeyUp", &[Value::U8(66)]);
    a.send_input("KeyUp", &[Value::U8(65)]);
    wait_until(WAIT, || {
        let n = std::fs::read_to_string(&input_log)
            .unwrap_or_default()
            .lines()
            .count();
        async move {
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} lines"))
            }
        }
    })
    .await;
    let text = std::fs::read_to_string(&input_log).expect("log");
    let by_player: Vec<(String, u64)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .map(|v| {
            (
                v["player_id"].as_str().unwrap_or("").to_owned(),
                v["fields"]["keyCode"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        by_player.contains(&(a.player_id.clone().unwrap_or_default(), 65)),
        "{by_player:?}"
    );
    assert!(
        by_player.contains(&(b.player_id.clone().unwrap_or_default(), 66)),
        "{by_player:?}"
    );
    // B leaves; A keeps getting video.
    drop(b);
    let fa = a.frames;
    a.run_until(WAIT, "frames after B left", |p| p.frames >= fa + 15)
        .await;
    let _ = stop_tx.send(());
    streamer.await.expect("task").expect("clean run");
    let _ = std::fs::remove_file(&input_log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_vp8_the_player_receives_vp8_keyframes_on_join_and_on_request() {
    let server = signalling_server().await;
    let addrs = server.addrs();
    let settings = Settings {
        signalling_url: format!("ws://{}", addrs.streamer),
        streamer_id: "VP8".into(),
        width: 320,
        height: 180,
        codec: Codec::Vp8,
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let streamer = tokio::spawn(pxs_streamer::run(settings, async {
        let _ = stop_rx.await;
    }));
    let mut player = Player::subscribe(addrs.player, "VP8").await;
    player
        .run_until(WAIT, "30 VP8 frames, a keyframe and the channel", |p| {
            p.frames >= 30
                && p.keyframes_seen >= 1
                && p.audio.packets >= 10
                && p.count(|m| matches!(m, FromStreamer::Protocol(_))) >= 2
        })
        .await;
    let offer = player
        .signalling
        .iter()
        .find(|m| m["type"] == "offer")
        .expect("offer");
    let sdp = offer["sdp"].as_str().expect("sdp");
    assert!(sdp.contains("a=rtpmap:96 VP8/90000"), "{sdp}");
    assert!(!sdp.contains("H264"), "only the codec we encode: {sdp}");
    assert_eq!(player.video_codec.as_deref(), Some("VP8"));
    assert_eq!(
        player.vp8_keyframe_sizes[0],
        (320, 180),
        "the join keyframe"
    );
    assert_eq!(player.audio.errors, 0, "the tone comes with VP8 too");

    // IFrameRequest forces a keyframe (a new libvpx encoder starts with one).
    let before = player.keyframes_seen;
    player.send_input("IFrameRequest", &[]);
    player
        .run_until(WAIT, "a VP8 keyframe after IFrameRequest", |p| {
            p.keyframes_seen > before
        })
        .await;
    // A resize gives a keyframe of the new size.
    player.send_input(
        "Command",
        &[Value::Str(
            r#"{"Resolution.Width":640,"Resolution.Height":360}"#.into(),
        )],
    );
    player
        .run_until(WAIT, "a 640x360 VP8 keyframe", |p| {
            p.vp8_keyframe_sizes.contains(&(640, 360))
        })
        .await;
    let qps = player.avg_qps(WAIT).await;
    assert!(qps.iter().all(|q| *q <= 127), "VP8 q index: {qps:?}");
    eprintln!(
        "VP8: {} frames, keyframes {:?}, VideoEncoderAvgQP {qps:?}",
        player.frames, player.vp8_keyframe_sizes
    );
    let _ = stop_tx.send(());
    streamer.await.expect("task").expect("clean run");
}
