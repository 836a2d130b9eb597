//! The routing core under arbitrary sequences of connections, messages (well-formed or not),
//! disconnects and clock steps: it must never panic, must keep its indexes consistent, and must
//! never send to a connection it closed.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pxs_protocol::signalling::ClientMessage;
use pxs_webrtc_session::router::{ConnId, Output, Role, Router, RouterConfig};
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
enum Op {
    Connect(u8),
    /// A frame from connection `n % live`, built from a template and an argument.
    Message(u8, u8, u8),
    /// A raw frame, parsed as the shell would.
    Raw(u8, String),
    Disconnect(u8),
    TooBig(u8),
    Advance(u16),
}

fn template(kind: u8, arg: u8) -> String {
    let id = format!("S{}", arg % 4);
    let pid = format!("Player{}", arg % 8);
    match kind % 16 {
        0 => format!(r#"{{"type":"endpointId","id":"{id}"}}"#),
        1 => r#"{"type":"listStreamers"}"#.into(),
        2 => format!(r#"{{"type":"subscribe","streamerId":"{id}"}}"#),
        3 => r#"{"type":"unsubscribe"}"#.into(),
        4 => format!(r#"{{"type":"offer","sdp":"o","playerId":"{pid}","sfu":true}}"#),
        5 => format!(r#"{{"type":"answer","sdp":"a","playerId":"{pid}"}}"#),
        6 => format!(r#"{{"type":"iceCandidate","candidate":{{"candidate":"c"}},"playerId":"{pid}"}}"#),
        7 => format!(r#"{{"type":"disconnectPlayer","playerId":"{pid}","reason":"r"}}"#),
        8 => r#"{"type":"ping","time":1}"#.into(),
        9 => format!(r#"{{"type":"layerPreference","spatialLayer":1,"temporalLayer":1,"playerId":"{pid}"}}"#),
        10 => r#"{"type":"dataChannelRequest"}"#.into(),
        11 => r#"{"type":"peerDataChannelsReady"}"#.into(),
        12 => format!(r#"{{"type":"peerDataChannels","playerId":"{pid}","sendStreamId":1,"recvStreamId":2}}"#),
        13 => format!(r#"{{"type":"streamerDataChannels","playerId":"{pid}","sendStreamId":1,"recvStreamId":2}}"#),
        14 => r#"{"type":"startStreaming"}"#.into(),
        _ => r#"{"type":"stopStreaming"}"#.into(),
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut router = Router::new(RouterConfig {
        max_players: 3,
        ..Default::default()
    });
    let mut now = Instant::now();
    let mut next = 0u64;
    let mut live: Vec<ConnId> = Vec::new();
    let mut closed: HashSet<ConnId> = HashSet::new();
    for op in ops.into_iter().take(500) {
        let pick = |n: u8| live.get(n as usize % live.len().max(1)).copied();
        match op {
            Op::Connect(r) => {
                let role = [Role::Streamer, Role::Player, Role::Sfu][r as usize % 3];
                let c = ConnId(next);
                next += 1;
                router.connect(now, c, role, None);
                live.push(c);
            }
            Op::Message(n, kind, arg) => {
                if let Some(c) = pick(n) {
                    feed(&mut router, now, c, &template(kind, arg));
                }
            }
            Op::Raw(n, text) => {
                if let Some(c) = pick(n) {
                    feed(&mut router, now, c, &text);
                }
            }
            Op::Disconnect(n) => {
                if let Some(c) = pick(n) {
                    router.disconnect(c);
                    live.retain(|x| *x != c);
                    closed.insert(c);
                }
            }
            Op::TooBig(n) => {
                if let Some(c) = pick(n) {
                    router.too_big(c, 1);
                }
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(ms as u64);
                router.handle_timeout(now);
            }
        }
        while let Some(out) = router.poll_output() {
            match out {
                Output::Send { to, msg } => {
                    assert!(!closed.contains(&to), "sent to a closed connection");
                    let v: serde_json::Value =
                        serde_json::from_str(&msg.to_json()).expect("what is sent is JSON");
                    assert!(v["type"].is_string(), "what is sent has a type: {v}");
                }
                Output::Close { conn, reason, .. } => {
                    assert!(reason.len() <= 123);
                    assert!(closed.insert(conn), "closed twice");
                    live.retain(|x| *x != conn);
                }
            }
        }
        router.check_invariants();
    }
});

fn feed(router: &mut Router, now: Instant, c: ConnId, text: &str) {
    match ClientMessage::from_json(text) {
        // As the shell does: with the text, so that relayed messages go out as it.
        Ok(m) => router.message_text(now, c, m, text.into()),
        Err(e) => router.invalid(c, &e),
    }
}
