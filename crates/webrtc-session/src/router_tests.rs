//! Scenario tests of the routing core with a fake clock: Epic's message sequences and disconnect
//! rules (as `docs/webrtc-session.md`, "Compatibility with Epic's server", lists them) and hostile
//! input. No sockets, no sleeps.

use super::*;
use pxs_protocol::signalling::ClientMessage;
use serde_json::{Value, json};

struct H {
    router: Router,
    now: Instant,
    next: u64,
    /// Messages go in with their text, as the shell gives them ([`Router::message_text`]);
    /// `false`: parsed only ([`Router::message`]), so every relayed message is serialized.
    texts: bool,
}

impl H {
    fn new() -> H {
        H::with(RouterConfig::default())
    }

    fn with(config: RouterConfig) -> H {
        H {
            router: Router::new(config),
            now: Instant::now(),
            next: 0,
            texts: true,
        }
    }

    fn connect(&mut self, role: Role) -> ConnId {
        let c = ConnId(self.next);
        self.next += 1;
        self.router
            .connect(self.now, c, role, Some([127, 0, 0, 1].into()));
        c
    }

    /// A streamer that connected and identified; its greeting is drained.
    fn streamer(&mut self, id: &str) -> ConnId {
        let s = self.connect(Role::Streamer);
        self.send(s, json!({"type":"endpointId","id":id}));
        self.drain();
        s
    }

    /// A player subscribed to `streamer_id`; everything so far is drained.
    fn player(&mut self, streamer_id: &str) -> ConnId {
        let p = self.connect(Role::Player);
        self.send(p, json!({"type":"subscribe","streamerId":streamer_id}));
        self.drain();
        p
    }

    fn send(&mut self, conn: ConnId, v: Value) {
        self.send_text(conn, &v.to_string())
    }

    fn send_text(&mut self, conn: ConnId, text: &str) {
        match ClientMessage::from_json(text) {
            Ok(msg) if self.texts => self.router.message_text(self.now, conn, msg, text.into()),
            Ok(msg) => self.router.message(self.now, conn, msg),
            Err(e) => self.router.invalid(conn, &e),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.router.poll_timeout().is_some_and(|t| t <= self.now) {
            self.router.handle_timeout(self.now);
        }
    }

    /// Every output since the last drain, messages as JSON.
    fn drain(&mut self) -> Vec<(ConnId, Value)> {
        let mut out = Vec::new();
        while let Some(o) = self.router.poll_output() {
            out.push(match o {
                Output::Send { to, msg } => (to, serde_json::from_str(&msg.to_json()).unwrap()),
                Output::Close { conn, code, reason } => {
                    (conn, json!({"close": code, "reason": reason}))
                }
            });
        }
        out
    }
}

fn only(out: &[(ConnId, Value)], to: ConnId) -> Vec<Value> {
    out.iter()
        .filter(|(c, _)| *c == to)
        .map(|(_, v)| v.clone())
        .collect()
}

// ----- streamer registration -----

#[test]
fn with_an_expected_id_a_streamer_identifying_as_another_is_closed_and_never_listed() {
    let mut h = H::with(RouterConfig {
        expected_streamer_id: Some("ses_mine".into()),
        ..Default::default()
    });
    h.router.enable_events(Duration::from_secs(1));
    let stranger = h.connect(Role::Streamer);
    h.drain();
    h.send(stranger, json!({"type":"endpointId","id":"ses_other"}));
    assert_eq!(
        h.drain(),
        vec![(
            stranger,
            json!({"close": 1008, "reason": "unexpected streamer id"})
        )]
    );
    assert_eq!(h.router.streamer_count(), 0);
    assert_eq!(
        h.router.poll_event(),
        None,
        "the stranger is never reported"
    );
    h.streamer("ses_mine");
    assert_eq!(
        h.router.poll_event(),
        Some(SessionEvent::StreamerIdentified {
            streamer_id: "ses_mine".into()
        })
    );
    let p = h.connect(Role::Player);
    h.drain();
    h.send(p, json!({"type":"listStreamers"}));
    assert_eq!(
        only(&h.drain(), p),
        vec![json!({"type":"streamerList","ids":["ses_mine"]})]
    );
    assert_eq!(h.router.streamer_count(), 1);
    h.router.check_invariants();
}

#[test]
fn a_streamer_gets_config_then_identify_and_its_id_confirmed() {
    let mut h = H::with(RouterConfig {
        peer_connection_options: json!({"iceServers":[{"urls":["stun:x"]}]}),
        ..Default::default()
    });
    let s = h.connect(Role::Streamer);
    assert_eq!(
        only(&h.drain(), s),
        vec![
            json!({"type":"config","peerConnectionOptions":{"iceServers":[{"urls":["stun:x"]}]},"protocolVersion":"1.3.0"}),
            json!({"type":"identify"}),
        ]
    );
    h.send(
        s,
        json!({"type":"endpointId","id":"DefaultStreamer","protocolVersion":"1.0.0"}),
    );
    assert_eq!(
        h.drain(),
        vec![(
            s,
            json!({"type":"endpointIdConfirm","committedId":"DefaultStreamer"})
        )]
    );
    assert!(h.router.streamer("DefaultStreamer").unwrap().streaming);
}

#[test]
fn a_player_gets_config_only() {
    let mut h = H::new();
    let p = h.connect(Role::Player);
    assert_eq!(
        h.drain(),
        vec![(
            p,
            json!({"type":"config","peerConnectionOptions":{},"protocolVersion":"1.3.0"})
        )]
    );
}

#[test]
fn duplicate_ids_are_uniquified_the_epic_way() {
    let mut h = H::new();
    let mut committed = Vec::new();
    for requested in [
        "DefaultStreamer",
        "DefaultStreamer",
        "DefaultStreamer",
        "",
        "",
    ] {
        let s = h.connect(Role::Streamer);
        h.drain();
        h.send(s, json!({"type":"endpointId","id":requested}));
        committed.push(only(&h.drain(), s)[0]["committedId"].clone());
    }
    assert_eq!(
        committed,
        vec![
            json!("DefaultStreamer"),
            json!("DefaultStreamer1"),
            json!("DefaultStreamer2"),
            json!("UnknownStreamer"),
            json!("UnknownStreamer1"),
        ]
    );
}

#[test]
fn unique_id_follows_the_largest_suffix_and_never_collides() {
    assert_eq!(unique_id("A", ["B"].into_iter()), "A");
    assert_eq!(unique_id("A", ["A"].into_iter()), "A1");
    assert_eq!(unique_id("A", ["A", "A3"].into_iter()), "A4");
    assert_eq!(unique_id("A", ["A1"].into_iter()), "A2");
    assert_eq!(unique_id("A1", ["A1", "A11"].into_iter()), "A12");
    assert_eq!(unique_id("A", ["A", "Ab1"].into_iter()), "A1");
    let huge = format!("A{}", u64::MAX);
    let id = unique_id("A", ["A", huge.as_str()].into_iter());
    assert!(id != "A" && id != huge, "{id}");
}

#[test]
fn a_renamed_streamer_tells_its_subscribers_new_id() {
    let mut h = H::new();
    let s = h.streamer("First");
    let p = h.player("First");
    h.send(s, json!({"type":"endpointId","id":"Second"}));
    let out = h.drain();
    assert_eq!(
        only(&out, s),
        vec![json!({"type":"endpointIdConfirm","committedId":"Second"})]
    );
    assert_eq!(
        only(&out, p),
        vec![json!({"type":"streamerIdChanged","newID":"Second"})]
    );
    assert!(h.router.streamer("First").is_none());
    assert_eq!(
        h.router.player("Player0").unwrap().subscribed_to.as_deref(),
        Some("Second")
    );
    // Re-identifying with the same id changes nothing for the players.
    h.send(s, json!({"type":"endpointId","id":"Second"}));
    assert_eq!(only(&h.drain(), p), Vec::<Value>::new());
    assert_eq!(h.router.streamer("Second").unwrap().streamer_id, "Second");
}

#[test]
fn an_overlong_streamer_id_is_dropped() {
    let mut h = H::new();
    let s = h.connect(Role::Streamer);
    h.drain();
    h.send(
        s,
        json!({"type":"endpointId","id":"x".repeat(MAX_STREAMER_ID + 1)}),
    );
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.router.streamer_count(), 0);
}

// ----- player flow -----

#[test]
fn the_default_player_flow_relays_offer_answer_and_candidates() {
    let mut h = H::new();
    let s = h.streamer("DefaultStreamer");
    let p = h.connect(Role::Player);
    h.drain();

    h.send(p, json!({"type":"listStreamers"}));
    assert_eq!(
        h.drain(),
        vec![(p, json!({"type":"streamerList","ids":["DefaultStreamer"]}))]
    );

    h.send(
        p,
        json!({"type":"subscribe","streamerId":"DefaultStreamer"}),
    );
    assert_eq!(
        h.drain(),
        vec![(
            s,
            json!({"type":"playerConnected","playerId":"Player0","dataChannel":true,"sfu":false})
        )]
    );

    // Streamer → player: playerId is kept (the frontend reads it), extra fields too.
    let offer = json!({"type":"offer","sdp":"v=0\r\n","playerId":"Player0","x":1});
    h.send(s, offer.clone());
    assert_eq!(h.drain(), vec![(p, offer)]);

    // Player → streamer: playerId is stamped, overriding whatever the player claimed.
    h.send(p, json!({"type":"answer","sdp":"v=0\r\n","playerId":"Player99","minBitrateBps":0,"maxBitrateBps":0}));
    assert_eq!(
        h.drain(),
        vec![(
            s,
            json!({"type":"answer","sdp":"v=0\r\n","playerId":"Player0","minBitrateBps":0,"maxBitrateBps":0})
        )]
    );

    let cand = json!({"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0});
    h.send(p, json!({"type":"iceCandidate","candidate":cand}));
    assert_eq!(
        h.drain(),
        vec![(
            s,
            json!({"type":"iceCandidate","candidate":cand,"playerId":"Player0"})
        )]
    );
    h.send(
        s,
        json!({"type":"iceCandidate","candidate":cand,"playerId":"Player0"}),
    );
    assert_eq!(
        h.drain(),
        vec![(
            p,
            json!({"type":"iceCandidate","candidate":cand,"playerId":"Player0"})
        )]
    );
}

#[test]
fn relayed_messages_go_out_as_their_senders_text_with_a_players_id_added() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p = h.player("S");
    let raw = |h: &mut H| -> Vec<(ConnId, Payload)> {
        std::iter::from_fn(|| h.router.poll_output())
            .map(|o| match o {
                Output::Send { to, msg } => (to, msg),
                other => panic!("not a send: {other:?}"),
            })
            .collect()
    };
    // A streamer's offer goes out byte for byte, spacing, escapes and field order included.
    let offer = "{ \"sdp\" : \"v=0\\r\\n\\u0041\", \"type\":\"offer\",\"playerId\":\"Player0\",\"x\":[1.50]}";
    h.send_text(s, offer);
    assert_eq!(
        raw(&mut h),
        vec![(
            p,
            Payload::Text {
                kind: RelayKind::Offer,
                text: offer.into()
            }
        )]
    );
    // A player's candidate gets its id in front, and is otherwise as sent.
    let cand = r#"{"type":"iceCandidate","candidate":{"candidate":"c","sdpMid":"0"},"at":7}"#;
    h.send_text(p, cand);
    let out = raw(&mut h);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, s);
    assert!(out[0].1.is_ice_candidate());
    assert_eq!(
        out[0].1.to_json(),
        format!(r#"{{"playerId":"Player0",{}"#, &cand[1..])
    );
}

#[test]
fn a_players_message_that_may_name_a_player_id_gets_ours_alone() {
    // Null, escaped or nested: the text could make a receiver read another `playerId` than
    // ours, so the message is serialized instead, with ours.
    for text in [
        r#"{"type":"iceCandidate","candidate":{"candidate":"c"},"playerId":null}"#,
        r#"{"type":"iceCandidate","candidate":{"candidate":"c"},"player\u0049d":"Player9"}"#,
        r#"{"type":"iceCandidate","candidate":{"candidate":"c","playerId":"Player9"}}"#,
        r#"{"type":"answer","sdp":"s","playerId":"Player9"}"#,
    ] {
        let mut h = H::new();
        let s = h.streamer("S");
        let p = h.player("S");
        h.send_text(p, text);
        let out = h.drain();
        assert_eq!(out.len(), 1, "{text}: {out:?}");
        assert_eq!(out[0].0, s);
        assert_eq!(out[0].1["playerId"], "Player0", "{text}: {out:?}");
    }
}

#[test]
fn relayed_messages_read_the_same_as_text_or_serialized() {
    let run = |texts: bool| {
        let mut h = H::new();
        h.texts = texts;
        let s = h.streamer("S");
        let p = h.player("S");
        let mut seen = Vec::new();
        let cand = json!({"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"});
        for (from, v) in [
            (
                s,
                json!({"type":"offer","sdp":"v=0\r\n\"q\"\u{e9}","playerId":"Player0","sfu":false,"x":{"y":[1,"z"]}}),
            ),
            (
                s,
                json!({"type":"iceCandidate","candidate":cand,"playerId":"Player0","bt":12}),
            ),
            (
                s,
                json!({"type":"answer","sdp":"a","playerId":"Player0","minBitrateBps":1}),
            ),
            (
                s,
                json!({"type":"offer","sdp":"to nobody","playerId":"Player7"}),
            ),
            (
                p,
                json!({"type":"answer","sdp":"v=0\r\n","minBitrateBps":0,"maxBitrateBps":0}),
            ),
            (
                p,
                json!({"type":"iceCandidate","candidate":cand,"at":1,"bt":2}),
            ),
            (p, json!({"type":"offer","sdp":"o","multiplex":true})),
        ] {
            h.send(from, v);
            seen.extend(h.drain());
        }
        seen
    };
    let text = run(true);
    assert_eq!(text.len(), 6);
    assert_eq!(text, run(false));
}

#[test]
fn the_streamer_list_shows_identified_streamers_only_in_connection_order() {
    let mut h = H::new();
    h.streamer("B");
    let _pending = h.connect(Role::Streamer);
    h.streamer("A");
    let p = h.connect(Role::Player);
    h.drain();
    h.send(p, json!({"type":"listStreamers"}));
    assert_eq!(
        h.drain(),
        vec![(p, json!({"type":"streamerList","ids":["B","A"]}))]
    );
}

#[test]
fn subscribing_to_an_unknown_streamer_fails_with_a_message() {
    let mut h = H::new();
    let p = h.connect(Role::Player);
    h.drain();
    h.send(p, json!({"type":"subscribe","streamerId":"Nope"}));
    assert_eq!(
        h.drain(),
        vec![(
            p,
            json!({"type":"subscribeFailed","message":"Streamer Nope does not exist."})
        )]
    );
}

#[test]
fn a_full_streamer_refuses_more_players() {
    let mut h = H::with(RouterConfig {
        max_players: 2,
        ..Default::default()
    });
    let s = h.streamer("S");
    h.player("S");
    h.player("S");
    let p3 = h.connect(Role::Player);
    h.drain();
    h.send(p3, json!({"type":"subscribe","streamerId":"S"}));
    assert_eq!(
        h.drain(),
        vec![(
            p3,
            json!({"type":"subscribeFailed","message":"Streamer S is full. Max players = 2."})
        )]
    );
    assert_eq!(h.router.streamer("S").unwrap().subscribers.len(), 2);
    // A slot frees when a player leaves.
    h.router.disconnect(ConnId(1));
    h.drain();
    h.send(p3, json!({"type":"subscribe","streamerId":"S"}));
    assert_eq!(only(&h.drain(), s)[0]["type"], "playerConnected");
}

#[test]
fn resubscribing_leaves_the_previous_streamer_first() {
    let mut h = H::new();
    let a = h.streamer("A");
    let b = h.streamer("B");
    let p = h.player("A");
    h.send(p, json!({"type":"subscribe","streamerId":"B"}));
    let out = h.drain();
    assert_eq!(
        only(&out, a),
        vec![json!({"type":"playerDisconnected","playerId":"Player0"})]
    );
    assert_eq!(only(&out, b)[0]["type"], "playerConnected");
    // Subscribing again to the same streamer re-announces the player.
    h.send(p, json!({"type":"subscribe","streamerId":"B"}));
    let types: Vec<Value> = only(&h.drain(), b)
        .iter()
        .map(|v| v["type"].clone())
        .collect();
    assert_eq!(
        types,
        vec![json!("playerDisconnected"), json!("playerConnected")]
    );
}

#[test]
fn unsubscribe_tells_the_streamer() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p = h.player("S");
    h.send(p, json!({"type":"unsubscribe"}));
    assert_eq!(
        h.drain(),
        vec![(s, json!({"type":"playerDisconnected","playerId":"Player0"}))]
    );
    // Nothing reaches an unsubscribed player any more.
    h.send(s, json!({"type":"offer","sdp":"x","playerId":"Player0"}));
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn a_streamer_can_address_only_its_own_players() {
    let mut h = H::new();
    let a = h.streamer("A");
    h.streamer("B");
    let pa = h.player("A");
    let _pb = h.player("B");
    h.send(a, json!({"type":"offer","sdp":"x","playerId":"Player1"}));
    h.send(a, json!({"type":"offer","sdp":"x"}));
    h.send(
        a,
        json!({"type":"iceCandidate","candidate":{"candidate":"c"},"playerId":"Player1"}),
    );
    h.send(a, json!({"type":"disconnectPlayer","playerId":"Player1"}));
    h.send(
        a,
        json!({"type":"offer","sdp":"x","playerId":"NoSuchPlayer"}),
    );
    assert_eq!(h.drain(), vec![]);
    h.send(a, json!({"type":"offer","sdp":"x","playerId":"Player0"}));
    assert_eq!(
        h.drain(),
        vec![(pa, json!({"type":"offer","sdp":"x","playerId":"Player0"}))]
    );
}

#[test]
fn ping_is_answered_with_the_same_64_bit_time() {
    let mut h = H::new();
    for role in [Role::Player, Role::Streamer, Role::Sfu] {
        let c = h.connect(role);
        h.drain();
        h.send_text(c, r#"{"type":"ping","time":1764039000123}"#);
        assert_eq!(
            h.drain(),
            vec![(c, json!({"type":"pong","time":1764039000123_i64}))]
        );
    }
}

#[test]
fn layer_preferences_go_from_player_to_its_streamer_and_from_streamer_to_sfus() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p = h.player("S");
    h.send(
        p,
        json!({"type":"layerPreference","spatialLayer":1,"temporalLayer":2}),
    );
    assert_eq!(
        h.drain(),
        vec![(
            s,
            json!({"type":"layerPreference","spatialLayer":1,"temporalLayer":2,"playerId":"Player0"})
        )]
    );
    let sfu = h.connect(Role::Sfu);
    h.send(sfu, json!({"type":"subscribe","streamerId":"S"}));
    h.drain();
    h.send(
        s,
        json!({"type":"layerPreference","spatialLayer":0,"temporalLayer":0,"playerId":"Player0"}),
    );
    assert_eq!(
        h.drain(),
        vec![(
            sfu,
            json!({"type":"layerPreference","spatialLayer":0,"temporalLayer":0,"playerId":"Player0"})
        )]
    );
}

#[test]
fn messages_a_role_may_not_send_are_dropped() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p = h.player("S");
    // A player cannot identify, kick or act as an SFU; a streamer cannot subscribe or list.
    h.send(p, json!({"type":"endpointId","id":"Evil"}));
    h.send(p, json!({"type":"disconnectPlayer","playerId":"Player0"}));
    h.send(p, json!({"type":"startStreaming"}));
    h.send(
        p,
        json!({"type":"peerDataChannels","playerId":"Player0","sendStreamId":1,"recvStreamId":2}),
    );
    h.send(s, json!({"type":"subscribe","streamerId":"S"}));
    h.send(s, json!({"type":"listStreamers"}));
    h.send(s, json!({"type":"startStreaming"}));
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.router.streamer_count(), 1);
}

// ----- browser-offer mode -----

#[test]
fn a_player_offering_first_is_subscribed_to_the_first_streamer() {
    let mut h = H::new();
    let s = h.streamer("First");
    h.streamer("Second");
    let p = h.connect(Role::Player);
    h.drain();
    h.send(p, json!({"type":"offer","sdp":"v=0"}));
    assert_eq!(
        h.drain(),
        vec![
            (
                s,
                json!({"type":"playerConnected","playerId":"Player0","dataChannel":true,"sfu":false})
            ),
            (s, json!({"type":"offer","sdp":"v=0","playerId":"Player0"})),
        ]
    );
    h.send(s, json!({"type":"answer","sdp":"v=0","playerId":"Player0"}));
    assert_eq!(
        h.drain(),
        vec![(p, json!({"type":"answer","sdp":"v=0","playerId":"Player0"}))]
    );
}

#[test]
fn a_player_offering_with_no_streamer_is_closed() {
    let mut h = H::new();
    let p = h.connect(Role::Player);
    h.drain();
    h.send(p, json!({"type":"offer","sdp":"v=0"}));
    assert_eq!(
        h.drain(),
        vec![(p, json!({"close":1013,"reason":"no streamer is connected"}))]
    );
    assert_eq!(h.router.player_count(), 0);
}

#[test]
fn messages_other_than_offer_answer_ice_before_subscribe_are_dropped() {
    let mut h = H::new();
    h.streamer("S");
    let p = h.connect(Role::Player);
    h.drain();
    h.send(
        p,
        json!({"type":"layerPreference","spatialLayer":0,"temporalLayer":0}),
    );
    h.send(p, json!({"type":"dataChannelRequest"}));
    h.send(p, json!({"type":"peerDataChannelsReady"}));
    assert_eq!(h.drain(), vec![]);
}

// ----- legacy streamers -----

#[test]
fn a_streamer_that_never_identifies_gets_a_legacy_id_after_the_timeout() {
    let mut h = H::new();
    let s = h.connect(Role::Streamer);
    let p = h.connect(Role::Player);
    h.drain();
    assert_eq!(
        h.router.poll_timeout(),
        Some(h.now + Duration::from_secs(5))
    );
    h.advance(Duration::from_millis(4999));
    h.send(p, json!({"type":"listStreamers"}));
    assert_eq!(
        h.drain(),
        vec![(p, json!({"type":"streamerList","ids":[]}))]
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(h.router.poll_timeout(), None);
    h.send(p, json!({"type":"listStreamers"}));
    assert_eq!(
        h.drain(),
        vec![(
            p,
            json!({"type":"streamerList","ids":["__LEGACY_STREAMER__0"]})
        )]
    );
    h.send(
        p,
        json!({"type":"subscribe","streamerId":"__LEGACY_STREAMER__0"}),
    );
    assert_eq!(only(&h.drain(), s)[0]["type"], "playerConnected");
    // A late endpointId renames it, and its players hear about it.
    h.send(s, json!({"type":"endpointId","id":"Late"}));
    let out = h.drain();
    assert_eq!(
        only(&out, p),
        vec![json!({"type":"streamerIdChanged","newID":"Late"})]
    );
}

#[test]
fn a_browser_offer_promotes_a_pending_streamer_at_once() {
    let mut h = H::new();
    let s = h.connect(Role::Streamer);
    let p = h.connect(Role::Player);
    h.drain();
    h.send(p, json!({"type":"offer","sdp":"v=0"}));
    assert_eq!(only(&h.drain(), s).len(), 2);
    assert!(h.router.streamer("__LEGACY_STREAMER__0").is_some());
    assert_eq!(h.router.poll_timeout(), None);
}

#[test]
fn legacy_ids_can_be_turned_off() {
    let mut h = H::with(RouterConfig {
        legacy_timeout: None,
        ..Default::default()
    });
    h.connect(Role::Streamer);
    assert_eq!(h.router.poll_timeout(), None);
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.router.streamer_count(), 0);
}

// ----- SFU -----

#[test]
fn the_sfu_sequence_relays_between_streamer_sfu_and_players() {
    let mut h = H::new();
    let s = h.streamer("DefaultStreamer");
    let sfu = h.connect(Role::Sfu);
    assert_eq!(
        only(&h.drain(), sfu)
            .iter()
            .map(|v| v["type"].clone())
            .collect::<Vec<_>>(),
        vec![json!("config"), json!("identify")]
    );
    h.send(sfu, json!({"type":"endpointId","id":"SFU"}));
    h.send(sfu, json!({"type":"listStreamers"}));
    h.send(
        sfu,
        json!({"type":"subscribe","streamerId":"DefaultStreamer"}),
    );
    let out = h.drain();
    assert_eq!(
        only(&out, sfu),
        vec![
            json!({"type":"endpointIdConfirm","committedId":"SFU"}),
            json!({"type":"streamerList","ids":["DefaultStreamer"]}),
        ]
    );
    assert_eq!(
        only(&out, s),
        vec![json!({"type":"playerConnected","playerId":"Player0","dataChannel":true,"sfu":true})]
    );
    // Streamer ⇄ SFU negotiation.
    h.send(s, json!({"type":"offer","sdp":"sim","playerId":"Player0"}));
    assert_eq!(
        h.drain(),
        vec![(
            sfu,
            json!({"type":"offer","sdp":"sim","playerId":"Player0"})
        )]
    );
    h.send(sfu, json!({"type":"answer","sdp":"ans"}));
    assert_eq!(
        h.drain(),
        vec![(s, json!({"type":"answer","sdp":"ans","playerId":"Player0"}))]
    );
    h.send(sfu, json!({"type":"startStreaming"}));

    // A player joins through the SFU.
    let p = h.connect(Role::Player);
    h.drain();
    h.send(p, json!({"type":"listStreamers"}));
    assert_eq!(
        h.drain(),
        vec![(
            p,
            json!({"type":"streamerList","ids":["DefaultStreamer","SFU"]})
        )]
    );
    h.send(p, json!({"type":"subscribe","streamerId":"SFU"}));
    assert_eq!(
        h.drain(),
        vec![(
            sfu,
            json!({"type":"playerConnected","playerId":"Player1","dataChannel":true,"sfu":false})
        )]
    );
    // SFU → player: playerId is removed, sfu and scalabilityMode kept.
    h.send(
        sfu,
        json!({"type":"offer","sdp":"o","playerId":"Player1","sfu":true,"scalabilityMode":"L1T3"}),
    );
    assert_eq!(
        h.drain(),
        vec![(
            p,
            json!({"type":"offer","sdp":"o","sfu":true,"scalabilityMode":"L1T3"})
        )]
    );
    h.send(p, json!({"type":"answer","sdp":"a"}));
    h.send(p, json!({"type":"dataChannelRequest"}));
    assert_eq!(
        h.drain(),
        vec![
            (sfu, json!({"type":"answer","sdp":"a","playerId":"Player1"})),
            (
                sfu,
                json!({"type":"dataChannelRequest","playerId":"Player1"})
            ),
        ]
    );
    h.send(
        sfu,
        json!({"type":"peerDataChannels","playerId":"Player1","sendStreamId":2,"recvStreamId":3}),
    );
    h.send(sfu, json!({"type":"streamerDataChannels","playerId":"Player1","sendStreamId":3,"recvStreamId":2}));
    assert_eq!(
        h.drain(),
        vec![
            (
                p,
                json!({"type":"peerDataChannels","playerId":"Player1","sendStreamId":2,"recvStreamId":3})
            ),
            (
                s,
                json!({"type":"streamerDataChannels","playerId":"Player1","sfuId":"Player0","sendStreamId":3,"recvStreamId":2})
            ),
        ]
    );
    h.send(p, json!({"type":"peerDataChannelsReady"}));
    assert_eq!(
        h.drain(),
        vec![(
            sfu,
            json!({"type":"peerDataChannelsReady","playerId":"Player1"})
        )]
    );
    // ICE from the SFU goes to the player it names, otherwise to its streamer.
    h.send(
        sfu,
        json!({"type":"iceCandidate","candidate":{"candidate":"c"},"playerId":"Player1"}),
    );
    h.send(
        sfu,
        json!({"type":"iceCandidate","candidate":{"candidate":"d"}}),
    );
    assert_eq!(
        h.drain(),
        vec![
            (
                p,
                json!({"type":"iceCandidate","candidate":{"candidate":"c"}})
            ),
            (
                s,
                json!({"type":"iceCandidate","candidate":{"candidate":"d"},"playerId":"Player0"})
            ),
        ]
    );

    // stopStreaming: the SFU's players are disconnected and it is no longer listed.
    h.send(sfu, json!({"type":"stopStreaming"}));
    assert_eq!(h.drain(), vec![(p, json!({"close":null,"reason":""}))]);
    let p2 = h.connect(Role::Player);
    h.drain();
    h.send(p2, json!({"type":"listStreamers"}));
    assert_eq!(
        h.drain(),
        vec![(p2, json!({"type":"streamerList","ids":["DefaultStreamer"]}))]
    );
}

// ----- disconnects -----

#[test]
fn a_player_leaving_is_reported_to_its_streamer() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p = h.player("S");
    h.router.disconnect(p);
    assert_eq!(
        h.drain(),
        vec![(s, json!({"type":"playerDisconnected","playerId":"Player0"}))]
    );
    assert_eq!(h.router.player_count(), 0);
    assert!(h.router.streamer("S").unwrap().subscribers.is_empty());
}

#[test]
fn a_streamer_leaving_closes_its_players_and_tells_its_sfus() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p1 = h.player("S");
    let p2 = h.player("S");
    let other = h.connect(Role::Player);
    let sfu = h.connect(Role::Sfu);
    h.send(sfu, json!({"type":"subscribe","streamerId":"S"}));
    h.drain();
    h.router.disconnect(s);
    let out = h.drain();
    assert_eq!(only(&out, p1), vec![json!({"close":null,"reason":""})]);
    assert_eq!(only(&out, p2), vec![json!({"close":null,"reason":""})]);
    assert_eq!(
        only(&out, sfu),
        vec![json!({"type":"streamerDisconnected"})]
    );
    assert_eq!(only(&out, other), Vec::<Value>::new());
    assert_eq!(out.len(), 3);
    assert_eq!(h.router.streamer_count(), 0);
    // The SFU stays, unsubscribed; the closed players are gone.
    assert_eq!(h.router.player("Player2").unwrap().player_id, "Player2");
    assert!(h.router.player("Player0").is_none());
    let sfu_info = h
        .router
        .players()
        .into_iter()
        .find(|p| p.player_id == "Player3")
        .unwrap();
    assert_eq!(sfu_info.subscribed_to, None);
}

#[test]
fn disconnect_player_closes_with_1011_and_the_reason() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p = h.player("S");
    h.send(
        s,
        json!({"type":"disconnectPlayer","playerId":"Player0","reason":"bye"}),
    );
    assert_eq!(
        h.drain(),
        vec![
            (p, json!({"close":1011,"reason":"bye"})),
            (s, json!({"type":"playerDisconnected","playerId":"Player0"})),
        ]
    );
}

#[test]
fn close_reasons_are_cut_to_fit_a_close_frame() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p = h.player("S");
    let reason = "é".repeat(200);
    h.send(
        s,
        json!({"type":"disconnectPlayer","playerId":"Player0","reason":reason}),
    );
    let out = only(&h.drain(), p);
    let r = out[0]["reason"].as_str().unwrap();
    assert!(r.len() <= MAX_CLOSE_REASON && r.len() >= MAX_CLOSE_REASON - 1);
    assert!(reason.starts_with(r));
}

#[test]
fn an_sfu_leaving_closes_its_players_and_tells_its_streamer() {
    let mut h = H::new();
    let s = h.streamer("S");
    let sfu = h.connect(Role::Sfu);
    h.send(sfu, json!({"type":"endpointId","id":"SFU"}));
    h.send(sfu, json!({"type":"subscribe","streamerId":"S"}));
    let p = h.player("SFU");
    h.router.disconnect(sfu);
    let out = h.drain();
    assert_eq!(
        only(&out, s),
        vec![json!({"type":"playerDisconnected","playerId":"Player0"})]
    );
    assert_eq!(only(&out, p), vec![json!({"close":null,"reason":""})]);
}

#[test]
fn nothing_is_ever_sent_unsolicited() {
    // Players coming and going cause no playerCount, no pings, nothing to bystanders.
    let mut h = H::new();
    let s = h.streamer("S");
    let bystander = h.connect(Role::Player);
    h.drain();
    let p = h.player("S");
    h.router.disconnect(p);
    h.advance(Duration::from_secs(600));
    let out = h.drain();
    assert!(only(&out, bystander).is_empty(), "{out:?}");
    assert!(
        only(&out, s)
            .iter()
            .all(|v| v["type"] == "playerDisconnected"),
        "{out:?}"
    );
}

// ----- hostile input -----

#[test]
fn invalid_json_closes_the_connection_with_1008() {
    for text in ["{not json", "[1]", "{}", r#"{"type":7}"#, "\u{0}\u{1}"] {
        let mut h = H::new();
        let s = h.streamer("S");
        let p = h.player("S");
        h.send_text(p, text);
        let out = h.drain();
        assert_eq!(out[0].0, p);
        assert_eq!(out[0].1["close"], 1008, "{text:?}: {out:?}");
        // The rest of the session is unaffected and told as for any leaving player.
        assert_eq!(
            only(&out, s),
            vec![json!({"type":"playerDisconnected","playerId":"Player0"})]
        );
        assert!(h.router.streamer("S").is_some());
    }
}

#[test]
fn a_streamers_unparsable_message_is_counted_and_dropped_not_a_reason_to_close_it() {
    for role in [Role::Streamer, Role::Sfu] {
        let mut h = H::new();
        let s = h.connect(role);
        h.send(s, json!({"type":"endpointId","id":"S"}));
        h.drain();
        let p = h.player("S");
        let garbage = ["{not json", "[1]", "{}", r#"{"type":7}"#, "\u{0}\u{1}"];
        for text in garbage {
            h.send_text(s, text);
        }
        // A known type with wrong fields is malformed too: counted with them.
        h.send_text(s, r#"{"type":"offer","sdp":12}"#);
        assert_eq!(h.drain(), vec![], "{role:?}: nothing closed, nothing sent");
        assert_eq!(
            h.router.stats().streamer_invalid_dropped,
            garbage.len() as u64 + 1
        );
        assert!(h.router.streamer("S").is_some());
        // It still routes.
        h.send(s, json!({"type":"ping","time":3}));
        assert_eq!(h.drain(), vec![(s, json!({"type":"pong","time":3}))]);
        if role == Role::Streamer {
            h.send(s, json!({"type":"offer","sdp":"v=0","playerId":"Player0"}));
            assert_eq!(only(&h.drain(), p)[0]["sdp"], "v=0");
        }
    }
    // A player's garbage is not counted as the application's.
    let mut h = H::new();
    h.streamer("S");
    let p = h.player("S");
    h.send_text(p, "{not json");
    assert_eq!(h.router.stats().streamer_invalid_dropped, 0);
}

#[test]
fn a_streamers_oversized_message_is_dropped_a_players_closes_it_with_1009() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p = h.player("S");
    h.router.oversized(s, 200 * 1024, 65536);
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.router.stats().streamer_oversized_dropped, 1);
    assert!(h.router.streamer("S").is_some());
    h.router.oversized(p, 70_000, 65536);
    let out = h.drain();
    assert_eq!(
        out[0],
        (
            p,
            json!({"close":1009,"reason":"message larger than 65536 bytes"})
        )
    );
    assert_eq!(h.router.stats().streamer_oversized_dropped, 1);
    // Past the streamer's own limit the shell cannot read the frame: closed as anyone.
    h.router.too_big(s, 1024 * 1024);
    assert_eq!(
        h.drain()[0],
        (
            s,
            json!({"close":1009,"reason":"message larger than 1048576 bytes"})
        )
    );
}

#[test]
fn unknown_types_and_bad_fields_are_dropped_and_the_connection_stays() {
    let mut h = H::new();
    let s = h.streamer("S");
    let p = h.player("S");
    for text in [
        r#"{"type":"stats","data":{}}"#,
        r#"{"type":"playerCount","count":3}"#,
        r#"{"type":"subscribe","streamerId":7}"#,
        r#"{"type":"offer"}"#,
        r#"{"type":"iceCandidate","candidate":5}"#,
        r#"{"type":"ping","time":"now"}"#,
    ] {
        h.send_text(p, text);
        h.send_text(s, text);
    }
    assert_eq!(h.drain(), vec![]);
    h.send(p, json!({"type":"ping","time":1}));
    assert_eq!(h.drain(), vec![(p, json!({"type":"pong","time":1}))]);
}

/// A player read again after a pause may send at once what it sent meanwhile within its rate, but
/// not a credit for the whole pause: after ten minutes paused it has four bursts, no more.
#[test]
fn a_long_pause_credits_a_player_at_most_four_bursts() {
    let mut h = H::with(RouterConfig {
        player_rate: Some(RateLimit {
            per_second: 10.0,
            burst: 20.0,
        }),
        ..Default::default()
    });
    h.streamer("S");
    // A short pause is credited in full: 19 left after `subscribe`, plus 3 s at 10/s.
    let p = h.player("S");
    h.router.resumed(p, Duration::from_secs(3));
    for _ in 0..49 {
        h.send(p, json!({"type":"ping","time":1}));
    }
    assert_eq!(only(&h.drain(), p).len(), 49);
    // A long one (6,000 messages' worth) up to 4 x 20.
    let q = h.player("S");
    h.router.resumed(q, Duration::from_secs(600));
    for _ in 0..80 {
        h.send(q, json!({"type":"ping","time":1}));
    }
    assert_eq!(only(&h.drain(), q).len(), 80);
    h.send(q, json!({"type":"ping","time":1}));
    assert_eq!(
        only(&h.drain(), q),
        vec![json!({"close":1008,"reason":"message rate limit exceeded"})]
    );
}

#[test]
fn a_message_flood_closes_the_player_with_1008() {
    let mut h = H::with(RouterConfig {
        player_rate: Some(RateLimit {
            per_second: 10.0,
            burst: 20.0,
        }),
        ..Default::default()
    });
    let s = h.streamer("S");
    let p = h.player("S");
    // The burst allows 20 messages: `subscribe` took one.
    for _ in 0..19 {
        h.send(p, json!({"type":"ping","time":1}));
    }
    assert_eq!(h.drain().len(), 19);
    // The bucket refills at the configured rate.
    h.advance(Duration::from_millis(100));
    h.send(p, json!({"type":"ping","time":1}));
    assert_eq!(h.drain().len(), 1);
    h.send(p, json!({"type":"ping","time":1}));
    let out = h.drain();
    assert_eq!(
        out[0],
        (
            p,
            json!({"close":1008,"reason":"message rate limit exceeded"})
        )
    );
    assert_eq!(
        only(&out, s),
        vec![json!({"type":"playerDisconnected","playerId":"Player0"})]
    );
    // Streamers are not limited by default.
    for _ in 0..1000 {
        h.send(s, json!({"type":"ping","time":1}));
    }
    assert_eq!(h.drain().len(), 1000);
}

#[test]
fn a_frame_over_the_limit_closes_with_1009() {
    let mut h = H::new();
    let p = h.connect(Role::Player);
    h.drain();
    h.router.too_big(p, 65536);
    assert_eq!(
        h.drain(),
        vec![(
            p,
            json!({"close":1009,"reason":"message larger than 65536 bytes"})
        )]
    );
}

#[test]
fn events_for_unknown_connections_are_ignored() {
    let mut h = H::new();
    let ghost = ConnId(999);
    h.send(ghost, json!({"type":"ping","time":1}));
    h.send_text(ghost, "garbage");
    h.router.disconnect(ghost);
    h.router.too_big(ghost, 1);
    assert_eq!(h.drain(), vec![]);
}

/// The outputs since the last drain, failing the case if anything went to a connection the router
/// had closed; closes are recorded in `closed` and taken out of `live`.
fn drain_open(
    h: &mut H,
    live: &mut Vec<ConnId>,
    closed: &mut std::collections::HashSet<ConnId>,
) -> Result<Vec<(ConnId, Value)>, proptest::test_runner::TestCaseError> {
    let out = h.drain();
    for (to, v) in &out {
        proptest::prop_assert!(!closed.contains(to), "sent {v} to closed {to:?}");
        if v.get("close").is_some() {
            closed.insert(*to);
            live.retain(|x| x != to);
        }
    }
    Ok(out)
}

proptest::proptest! {
    /// Whatever arrives in whatever order, the router keeps its invariants: every subscription
    /// is mirrored on both sides, ids map to live connections, and nothing is sent to a
    /// connection it has closed.
    #[test]
    fn random_sequences_keep_the_router_consistent(ops in proptest::collection::vec((0u8..12, 0u64..6, 0u8..4), 1..200)) {
        let mut h = H::with(RouterConfig { max_players: 2, ..Default::default() });
        let mut live: Vec<ConnId> = Vec::new();
        let mut closed = std::collections::HashSet::new();
        for (op, who, arg) in ops {
            let pick = live.get(who as usize % live.len().max(1)).copied();
            match (op, pick) {
                (0, _) => live.push(h.connect(Role::Streamer)),
                (1, _) | (2, _) => live.push(h.connect(Role::Player)),
                (3, _) => live.push(h.connect(Role::Sfu)),
                (4, Some(c)) => h.send(c, json!({"type":"endpointId","id":format!("S{arg}")})),
                (5, Some(c)) => h.send(c, json!({"type":"subscribe","streamerId":format!("S{arg}")})),
                (6, Some(c)) => h.send(c, json!({"type":"offer","sdp":"x","playerId":format!("Player{arg}")})),
                (7, Some(c)) => h.send(c, json!({"type":"disconnectPlayer","playerId":format!("Player{arg}")})),
                (8, Some(c)) => { h.router.disconnect(c); live.retain(|x| *x != c); closed.insert(c); }
                (9, Some(c)) => h.send(c, json!({"type":"unsubscribe"})),
                (10, Some(c)) => h.send(c, json!({"type":"stopStreaming"})),
                (11, _) => h.advance(Duration::from_secs(arg as u64 * 3)),
                _ => {}
            }
            drain_open(&mut h, &mut live, &mut closed)?;
            h.router.check_invariants();
        }
    }
}

// ----- session events for an embedder (the session server) -----

fn events(h: &mut H) -> Vec<SessionEvent> {
    std::iter::from_fn(|| h.router.poll_event()).collect()
}

#[test]
fn events_are_off_unless_enabled() {
    let mut h = H::new();
    h.streamer("S");
    let p = h.player("S");
    h.send(p, json!({"type":"activity"}));
    assert_eq!(h.router.poll_event(), None);
}

#[test]
fn streamer_and_player_lifecycle_is_reported_in_order() {
    let mut h = H::new();
    h.router.enable_events(Duration::from_secs(1));
    let s = h.streamer("S");
    let p = h.player("S");
    let sfu = h.connect(Role::Sfu);
    h.send(sfu, json!({"type":"endpointId","id":"SFU"}));
    h.router.disconnect(p);
    h.router.disconnect(sfu);
    h.router.disconnect(s);
    assert_eq!(
        events(&mut h),
        vec![
            SessionEvent::StreamerIdentified {
                streamer_id: "S".into()
            },
            SessionEvent::PlayerConnected {
                player_id: "Player0".into()
            },
            SessionEvent::PlayerDisconnected {
                player_id: "Player0".into()
            },
            SessionEvent::StreamerDisconnected {
                streamer_id: "S".into()
            },
        ],
        "SFUs are neither players nor streamers here"
    );
}

#[test]
fn a_legacy_streamer_counts_as_identified() {
    let mut h = H::new();
    h.router.enable_events(Duration::from_secs(1));
    h.connect(Role::Streamer);
    assert!(events(&mut h).is_empty());
    h.advance(Duration::from_secs(6));
    assert_eq!(
        events(&mut h),
        vec![SessionEvent::StreamerIdentified {
            streamer_id: "__LEGACY_STREAMER__0".into()
        }]
    );
}

#[test]
fn activity_is_reported_at_most_once_per_interval_and_only_from_players() {
    let mut h = H::new();
    h.router.enable_events(Duration::from_secs(1));
    h.streamer("S");
    let p = h.player("S");
    let s2 = h.connect(Role::Streamer);
    h.drain();
    events(&mut h);
    h.send(p, json!({"type":"activity"}));
    h.send(p, json!({"type":"activity"}));
    h.send(s2, json!({"type":"activity"}));
    h.advance(Duration::from_millis(999));
    h.send(p, json!({"type":"activity"}));
    h.advance(Duration::from_millis(1));
    h.send(p, json!({"type":"activity"}));
    let act = SessionEvent::PlayerActivity {
        player_id: "Player0".into(),
    };
    assert_eq!(events(&mut h), vec![act.clone(), act]);
    assert!(h.drain().is_empty(), "activity is never relayed");
}

// ----- shared sessions (users, control, chat) -----

fn shared(limits: users::Limits) -> H {
    let now = Instant::now();
    let mut h = H::with(RouterConfig {
        users: Some(UsersConfig {
            limits,
            epoch: (now, 1_800_000_000_000),
        }),
        ..Default::default()
    });
    h.now = now;
    h
}

impl H {
    /// A user of a shared session, connected and subscribed; nothing is drained.
    fn user(
        &mut self,
        streamer_id: &str,
        role: users::Role,
        name: &str,
        link: Option<&str>,
    ) -> ConnId {
        let c = ConnId(self.next);
        self.next += 1;
        self.router.connect_player(
            self.now,
            c,
            Some([127, 0, 0, 1].into()),
            PlayerIdentity {
                name: Some(name.to_owned()),
                role,
                link: link.map(str::to_owned),
            },
        );
        self.send(c, json!({"type":"subscribe","streamerId":streamer_id}));
        c
    }
}

/// The `playerConnected` / `playerDisconnected` the streamer got, as (type, player, dataChannel).
fn to_streamer(out: &[(ConnId, Value)], s: ConnId) -> Vec<(String, String, Option<bool>)> {
    only(out, s)
        .into_iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap().to_owned(),
                v["playerId"].as_str().unwrap_or("").to_owned(),
                v["dataChannel"].as_bool(),
            )
        })
        .collect()
}

fn kinds(msgs: &[Value]) -> Vec<&str> {
    msgs.iter()
        .map(|v| v["type"].as_str().unwrap_or("close"))
        .collect()
}

#[test]
fn only_the_user_in_control_gets_a_data_channel() {
    let mut h = shared(users::Limits::default());
    let s = h.streamer("ses_a");
    let owner = h.user("ses_a", users::Role::Owner, "Alice", None);
    let out = h.drain();
    assert_eq!(
        to_streamer(&out, s),
        [("playerConnected".into(), "Player0".into(), Some(true))]
    );
    assert_eq!(
        kinds(&only(&out, owner)),
        ["config", "you", "chatHistory", "users"]
    );
    let viewer = h.user("ses_a", users::Role::Viewer, "Bob", Some("lnk_1"));
    let out = h.drain();
    assert_eq!(
        to_streamer(&out, s),
        [("playerConnected".into(), "Player1".into(), Some(false))],
        "a viewer watches without an input channel"
    );
    let you = &only(&out, viewer)[1];
    assert_eq!(
        you,
        &json!({"type":"you","playerId":"Player1","name":"Bob","role":"viewer"})
    );
    // Both see both, the owner in control.
    for c in [owner, viewer] {
        let users = only(&out, c)
            .into_iter()
            .rfind(|v| v["type"] == "users")
            .unwrap();
        assert_eq!(
            users["users"],
            json!([
                {"playerId":"Player0","name":"Alice","role":"owner","control":true,"requested":false},
                {"playerId":"Player1","name":"Bob","role":"viewer","control":false,"requested":false}
            ])
        );
    }
    h.router.check_invariants();
}

#[test]
fn a_handoff_renegotiates_the_two_players_whose_right_changed() {
    let mut h = shared(users::Limits::default());
    let s = h.streamer("ses_a");
    let owner = h.user("ses_a", users::Role::Owner, "Alice", None);
    let viewer = h.user("ses_a", users::Role::Viewer, "Bob", None);
    let third = h.user("ses_a", users::Role::Viewer, "Carol", None);
    h.drain();
    h.send(viewer, json!({"type":"control","action":"request"}));
    let out = h.drain();
    assert!(
        to_streamer(&out, s).is_empty(),
        "a request changes no right"
    );
    let users = only(&out, owner).pop().unwrap();
    assert_eq!(users["users"][1]["requested"], true);
    h.send(
        owner,
        json!({"type":"control","action":"give","playerId":"Player1"}),
    );
    let out = h.drain();
    assert_eq!(
        to_streamer(&out, s),
        [
            ("playerDisconnected".into(), "Player0".into(), None),
            ("playerConnected".into(), "Player0".into(), Some(false)),
            ("playerDisconnected".into(), "Player1".into(), None),
            ("playerConnected".into(), "Player1".into(), Some(true)),
        ]
    );
    // Each of the two gets a fresh `config` before its new offer, so Epic's frontend applies
    // that offer to a new peer connection; the users list follows.
    for c in [owner, viewer] {
        assert_eq!(kinds(&only(&out, c)), ["config", "users"]);
    }
    assert!(
        only(&out, third).iter().all(|v| v["type"] == "users"),
        "Carol only sees it"
    );
    // A viewer cannot take it back; the answer goes to the one who asked.
    h.send(third, json!({"type":"control","action":"take"}));
    let out = h.drain();
    assert_eq!(
        only(&out, third),
        [
            json!({"type":"refused","command":"control","message":"only the session's owner may do that"})
        ]
    );
    assert!(to_streamer(&out, s).is_empty());
    // The one in control leaves: the owner has it again, and only the owner is renegotiated.
    h.router.disconnect(viewer);
    let out = h.drain();
    assert_eq!(
        to_streamer(&out, s),
        [
            ("playerDisconnected".into(), "Player1".into(), None),
            ("playerDisconnected".into(), "Player0".into(), None),
            ("playerConnected".into(), "Player0".into(), Some(true)),
        ]
    );
    h.router.check_invariants();
}

#[test]
fn chat_reaches_everyone_and_a_joiner_gets_the_history() {
    let mut h = shared(users::Limits::default());
    h.streamer("ses_a");
    let owner = h.user("ses_a", users::Role::Owner, "Alice", None);
    let viewer = h.user("ses_a", users::Role::Viewer, "Bob", None);
    h.drain();
    h.advance(Duration::from_secs(3));
    h.send(owner, json!({"type":"chat","text":"hello"}));
    let line = json!({"type":"chat","id":1,"playerId":"Player0","name":"Alice","text":"hello","at":1_800_000_003_000_u64});
    let out = h.drain();
    assert_eq!(only(&out, owner), std::slice::from_ref(&line));
    assert_eq!(only(&out, viewer), std::slice::from_ref(&line));
    h.send(viewer, json!({"type":"chat","text":"x".repeat(501)}));
    assert_eq!(
        h.drain(),
        [(
            viewer,
            json!({"type":"refused","command":"chat","message":"a chat message has 1 to 500 characters"})
        )]
    );
    // Bob reloads: a new connection gets what was said.
    h.router.disconnect(viewer);
    let again = h.user("ses_a", users::Role::Viewer, "Bob", None);
    let out = only(&h.drain(), again);
    let mut want = line;
    want.as_object_mut().unwrap().remove("type");
    assert_eq!(out[2], json!({"type":"chatHistory","messages":[want]}));
    h.router.check_invariants();
}

#[test]
fn without_shared_sessions_the_new_messages_are_dropped_as_epic_does() {
    let mut h = H::new();
    h.streamer("ses_a");
    let p = h.player("ses_a");
    for m in [
        json!({"type":"chat","text":"hello"}),
        json!({"type":"control","action":"take"}),
        json!({"type":"kick","playerId":"Player0"}),
    ] {
        h.send(p, m);
    }
    assert_eq!(h.drain(), [], "nothing answered, nothing closed");
    // And a player of a shared-session router without an identity is not a user either.
    let mut h = shared(users::Limits::default());
    h.streamer("ses_a");
    let anon = h.player("ses_a");
    h.send(anon, json!({"type":"chat","text":"hello"}));
    assert_eq!(h.drain(), []);
}

#[test]
fn a_kicked_user_is_closed_and_its_link_refused_until_allowed() {
    let mut h = shared(users::Limits::default());
    let s = h.streamer("ses_a");
    let owner = h.user("ses_a", users::Role::Owner, "Alice", None);
    let guest = h.user("ses_a", users::Role::Viewer, "Bob", Some("lnk_1"));
    h.drain();
    h.send(guest, json!({"type":"kick","playerId":"Player0"}));
    assert_eq!(
        only(&h.drain(), guest)[0]["message"],
        "only the session's owner may do that"
    );
    h.send(owner, json!({"type":"kick","playerId":"Player1"}));
    let out = h.drain();
    assert!(
        out.contains(&(
            guest,
            json!({"close": 1008, "reason": "you were removed from this session; ask its owner to let you back in"})
        )),
        "{out:?}"
    );
    assert_eq!(
        to_streamer(&out, s),
        [("playerDisconnected".into(), "Player1".into(), None)]
    );
    let users = only(&out, owner)
        .into_iter()
        .rfind(|v| v["type"] == "users")
        .unwrap();
    assert_eq!(users["users"].as_array().unwrap().len(), 1);
    // The same link again: closed before the streamer hears of it.
    let back = h.user("ses_a", users::Role::Viewer, "Bob", Some("lnk_1"));
    let out = h.drain();
    assert!(to_streamer(&out, s).is_empty());
    assert_eq!(only(&out, back).last().unwrap()["close"], 1008);
    h.router.check_invariants();
}

#[test]
fn a_revoked_link_closes_its_users_and_refuses_it_from_then_on() {
    let mut h = shared(users::Limits::default());
    let s = h.streamer("ses_a");
    let owner = h.user("ses_a", users::Role::Owner, "Alice", None);
    let bob = h.user("ses_a", users::Role::Controller, "Bob", Some("lnk_1"));
    let carol = h.user("ses_a", users::Role::Viewer, "Carol", Some("lnk_2"));
    h.send(
        owner,
        json!({"type":"control","action":"give","playerId":"Player1"}),
    );
    h.drain();
    h.router.revoke_link("lnk_1");
    let out = h.drain();
    assert_eq!(
        only(&out, bob).last().unwrap(),
        &json!({"close": 1008, "reason": "the invitation you joined with was withdrawn"})
    );
    // Bob is gone for the application; he held control, which goes back to the owner,
    // whose input channel comes back.
    assert_eq!(
        to_streamer(&out, s),
        [
            ("playerDisconnected".into(), "Player1".into(), None),
            ("playerDisconnected".into(), "Player0".into(), None),
            ("playerConnected".into(), "Player0".into(), Some(true)),
        ]
    );
    let users = only(&out, carol).pop().unwrap();
    assert_eq!(users["users"].as_array().unwrap().len(), 2, "{users}");
    h.router.disconnect(bob);
    h.drain();
    // The same link again: refused with the reason; the other link still joins.
    let again = h.user("ses_a", users::Role::Controller, "Bob", Some("lnk_1"));
    let out = only(&h.drain(), again);
    assert_eq!(
        out.last().unwrap(),
        &json!({"close": 1008, "reason": "the invitation you joined with was withdrawn"})
    );
    h.user("ses_a", users::Role::Viewer, "Dave", Some("lnk_2"));
    assert!(kinds(&h.drain().into_iter().map(|(_, v)| v).collect::<Vec<_>>()).contains(&"you"));
    h.router.check_invariants();
}

#[test]
fn announcements_reach_every_user_of_a_shared_session() {
    let mut h = shared(users::Limits::default());
    h.streamer("ses_a");
    let owner = h.user("ses_a", users::Role::Owner, "Alice", None);
    let viewer = h.user("ses_a", users::Role::Viewer, "Bob", None);
    h.drain();
    let warning = ServerMessage::Warning {
        reason: "idle".into(),
        ends_at: 1_800_000_060_000,
    };
    h.router.announce(&warning);
    let out = h.drain();
    for c in [owner, viewer] {
        assert_eq!(
            only(&out, c),
            [json!({"type":"warning","reason":"idle","endsAt":1_800_000_060_000_u64})]
        );
    }
    // Without shared sessions (Epic's drop-in), nobody gets pxs's notices.
    let mut plain = H::new();
    plain.streamer("s");
    plain.player("s");
    plain.router.announce(&warning);
    assert!(plain.drain().is_empty());
}

#[test]
fn a_full_session_refuses_the_next_user_with_the_reason() {
    let mut h = shared(users::Limits {
        max_users: 1,
        ..users::Limits::default()
    });
    let s = h.streamer("ses_a");
    h.user("ses_a", users::Role::Owner, "Alice", None);
    h.drain();
    let late = h.user("ses_a", users::Role::Viewer, "Bob", None);
    let out = h.drain();
    assert_eq!(
        only(&out, late).last().unwrap(),
        &json!({"close": 1013, "reason": "the session is full (1 users at most)"})
    );
    assert!(to_streamer(&out, s).is_empty());
    h.router.check_invariants();
}

#[test]
fn a_user_cannot_offer_a_data_channel_of_its_own() {
    let mut h = shared(users::Limits::default());
    let s = h.streamer("ses_a");
    h.user("ses_a", users::Role::Owner, "Alice", None);
    let viewer = h.user("ses_a", users::Role::Viewer, "Bob", None);
    h.drain();
    h.send(
        viewer,
        json!({"type":"offer","sdp":"v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"}),
    );
    let out = h.drain();
    assert!(
        only(&out, s).is_empty(),
        "the streamer never sees it: {out:?}"
    );
    assert_eq!(
        only(&out, viewer),
        [
            json!({"type":"refused","command":"offer","message":"in a shared session the application makes the offer"})
        ]
    );
    h.router.check_invariants();
}

proptest::proptest! {
    /// Whatever users do in whatever order, what the application was last told of each player
    /// (`playerConnected{dataChannel}`, undone by `playerDisconnected`) gives the input channel
    /// to exactly the user in control, and nobody else: the guarantee on input, as the
    /// application sees it. The router's invariants hold and nothing goes to a closed connection.
    #[test]
    fn the_application_gives_input_only_to_the_user_in_control(
        ops in proptest::collection::vec((0u8..10, 0u64..6, 0u8..4), 1..150)
    ) {
        let mut h = shared(users::Limits { max_users: 4, ..users::Limits::default() });
        let s = h.streamer("S");
        let mut live: Vec<ConnId> = Vec::new();
        let mut closed = std::collections::HashSet::new();
        // What the application was told, per player id: has it the input channel?
        let mut told: BTreeMap<String, bool> = BTreeMap::new();
        let roles = [users::Role::Owner, users::Role::Controller, users::Role::Viewer, users::Role::Viewer];
        for (op, who, arg) in ops {
            let pick = live.get(who as usize % live.len().max(1)).copied();
            let target = format!("Player{arg}");
            match (op, pick) {
                (0, _) | (1, _) => {
                    let link = format!("lnk{}", arg % 2);
                    live.push(h.user("S", roles[arg as usize], "u", Some(&link)));
                }
                (2, Some(c)) => h.send(c, json!({"type":"control","action":"request"})),
                (3, Some(c)) => h.send(c, json!({"type":"control","action":"give","playerId":target})),
                (4, Some(c)) => {
                    let action = ["take", "release", "reset"][arg as usize % 3];
                    h.send(c, json!({"type":"control","action":action}))
                }
                (5, Some(c)) => h.send(c, json!({"type":"kick","playerId":target})),
                (6, Some(c)) => h.send(c, json!({"type":"chat","text":"hi"})),
                (7, Some(c)) => { h.router.disconnect(c); live.retain(|x| *x != c); closed.insert(c); }
                (8, Some(c)) => h.send(c, json!({"type":"unsubscribe"})),
                (9, Some(c)) => h.send(c, json!({"type":"subscribe","streamerId":"S"})),
                _ => {}
            }
            for (to, v) in drain_open(&mut h, &mut live, &mut closed)? {
                if to == s {
                    let pid = v["playerId"].as_str().unwrap_or("").to_owned();
                    match v["type"].as_str() {
                        Some("playerConnected") => { told.insert(pid, v["dataChannel"] == true); }
                        Some("playerDisconnected") => { told.remove(&pid); }
                        _ => {}
                    }
                }
            }
            h.router.check_invariants();
            let side = h.router.conns.get(&s).and_then(|c| c.streamer.as_ref()).unwrap();
            let users = side.users.as_ref().unwrap();
            let holder = users.control().map(|p| p.as_str().to_owned());
            for (pid, input) in &told {
                proptest::prop_assert_eq!(*input, holder.as_deref() == Some(pid.as_str()),
                    "the application thinks {} may send input: {}, but control is {:?}", pid, input, holder);
            }
            if let Some(hd) = &holder {
                proptest::prop_assert_eq!(told.get(hd), Some(&true), "the holder {} has no channel", hd);
            }
        }
    }
}

// ----- TURN credentials per connection -----

const TURN_SECRET: &str = "router-test-secret";
/// The wall clock when the tests' router starts, in ms since 1970.
const TURN_EPOCH_MS: u64 = 1_800_000_000_000;

fn turn_options() -> Value {
    json!({"iceServers": [
        {"urls": ["stun:stun.example.org:19302"]},
        {"urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]}
    ]})
}

fn with_turn(peer_connection_options: Value, users: Option<users::Limits>) -> H {
    let now = Instant::now();
    let mut h = H::with(RouterConfig {
        peer_connection_options,
        turn: Some(TurnConfig {
            secret: pxs_protocol::secret::Secret(TURN_SECRET.into()),
            ttl: Duration::from_secs(3600),
            streamer_ttl: turn::STREAMER_TTL,
            epoch: (now, TURN_EPOCH_MS),
            seed: 0x5eed,
        }),
        users: users.map(|limits| UsersConfig {
            limits,
            epoch: (now, TURN_EPOCH_MS),
        }),
        ..Default::default()
    });
    h.now = now;
    h
}

/// The TURN entry's `(username, credential)` of a `config`, after checking that the STUN entry
/// is untouched and that the credential is the HMAC of the username under the test's secret.
fn turn_pair(config: &Value) -> (String, String) {
    assert_eq!(config["type"], "config");
    let servers = &config["peerConnectionOptions"]["iceServers"];
    assert_eq!(servers[0], json!({"urls": ["stun:stun.example.org:19302"]}));
    assert_eq!(servers[1]["urls"], turn_options()["iceServers"][1]["urls"]);
    let username = servers[1]["username"]
        .as_str()
        .expect("a username")
        .to_owned();
    let credential = servers[1]["credential"]
        .as_str()
        .expect("a credential")
        .to_owned();
    let (expiry, id) = username.split_once(':').expect("expiry:id");
    let again = turn::credential(
        &pxs_protocol::secret::Secret(TURN_SECRET.into()),
        expiry.parse().expect("expiry in seconds"),
        id,
    );
    assert_eq!(again.credential, credential, "{username}");
    (username, credential)
}

fn expiry_of(username: &str) -> u64 {
    username.split(':').next().unwrap().parse().unwrap()
}

#[test]
fn players_get_credentials_of_their_own_that_expire_after_the_ttl() {
    let mut h = with_turn(turn_options(), None);
    h.streamer("s");
    let p0 = h.connect(Role::Player);
    let p1 = h.connect(Role::Player);
    let out = h.drain();
    let (user0, cred0) = turn_pair(&only(&out, p0)[0]);
    let (user1, cred1) = turn_pair(&only(&out, p1)[0]);
    let start = TURN_EPOCH_MS / 1000;
    assert_eq!(expiry_of(&user0), start + 3600);
    assert_eq!(expiry_of(&user1), start + 3600);
    assert!(user0.starts_with("1800003600:Player0-"), "{user0}");
    assert!(user1.starts_with("1800003600:Player1-"), "{user1}");
    assert_ne!(user0, user1);
    assert_ne!(cred0, cred1);
    // Later players' credentials expire later, by the time that passed.
    h.advance(Duration::from_secs(90));
    let p2 = h.connect(Role::Player);
    let (user2, _) = turn_pair(&only(&h.drain(), p2)[0]);
    assert_eq!(expiry_of(&user2), start + 90 + 3600);
    h.router.check_invariants();
}

#[test]
fn streamers_and_sfus_get_credentials_that_outlive_them() {
    let mut h = with_turn(turn_options(), None);
    let s = h.connect(Role::Streamer);
    let sfu = h.connect(Role::Sfu);
    let out = h.drain();
    let streamer_config = only(&out, s);
    assert_eq!(kinds(&streamer_config), ["config", "identify"]);
    let (user_s, cred_s) = turn_pair(&streamer_config[0]);
    let (user_f, cred_f) = turn_pair(&only(&out, sfu)[0]);
    let ten_years = TURN_EPOCH_MS / 1000 + turn::STREAMER_TTL.as_secs();
    assert_eq!(expiry_of(&user_s), ten_years);
    assert_eq!(expiry_of(&user_f), ten_years);
    assert!(user_s.contains(":streamer-"), "{user_s}");
    assert!(
        user_f.contains(":Player0-"),
        "an SFU is named by its player id: {user_f}"
    );
    assert_ne!((user_s, cred_s), (user_f, cred_f));
}

#[test]
fn without_a_turn_server_or_without_a_secret_the_options_go_out_as_configured() {
    let stun_only = json!({"iceServers": [{"urls": ["stun:stun.example.org:19302"]}]});
    let mut h = with_turn(stun_only.clone(), None);
    let p = h.connect(Role::Player);
    assert_eq!(
        only(&h.drain(), p),
        [json!({"type":"config","peerConnectionOptions":stun_only,"protocolVersion":"1.3.0"})]
    );
    let static_pair = json!({"iceServers": [
        {"urls": ["stun:stun.example.org:19302"]},
        {"urls": ["turn:turn.example.org:3478"], "username": "user", "credential": "pass"}
    ]});
    let mut h = H::with(RouterConfig {
        peer_connection_options: static_pair.clone(),
        ..Default::default()
    });
    let p = h.connect(Role::Player);
    let p2 = h.connect(Role::Player);
    let s = h.connect(Role::Streamer);
    let out = h.drain();
    for c in [p, p2, s] {
        assert_eq!(only(&out, c)[0]["peerConnectionOptions"], static_pair);
    }
}

#[test]
fn a_handoff_config_carries_fresh_credentials() {
    let mut h = with_turn(turn_options(), Some(users::Limits::default()));
    let s = h.streamer("ses_a");
    let owner = h.user("ses_a", users::Role::Owner, "Alice", None);
    let viewer = h.user("ses_a", users::Role::Viewer, "Bob", None);
    let out = h.drain();
    let (first_owner, _) = turn_pair(&only(&out, owner)[0]);
    let (first_viewer, _) = turn_pair(&only(&out, viewer)[0]);
    h.advance(Duration::from_secs(600));
    h.send(
        owner,
        json!({"type":"control","action":"give","playerId":"Player1"}),
    );
    let out = h.drain();
    assert_eq!(to_streamer(&out, s).len(), 4, "both are renegotiated");
    for (c, first) in [(owner, first_owner), (viewer, first_viewer)] {
        let msgs = only(&out, c);
        assert_eq!(kinds(&msgs), ["config", "users"]);
        let (user, _) = turn_pair(&msgs[0]);
        assert_eq!(
            expiry_of(&user),
            expiry_of(&first) + 600,
            "dated at the handoff"
        );
        assert_eq!(
            user.split_once(':').map(|x| x.1),
            first.split_once(':').map(|x| x.1),
            "the same connection keeps its id"
        );
    }
    h.router.check_invariants();
}
