//! The frames the benchmark's clients send and the cheap reading of the ones they receive.
//!
//! Timed frames carry two extra fields that the signalling server forwards unchanged:
//! `"at"`, when the client handed the frame to its socket, and `"bt"`, when the schedule meant it
//! to leave. Both are nanoseconds since the run's epoch. Latency is measured from `bt`.

use pxs_protocol::signalling::ClientMessage;

/// A plausible SDP offer of exactly `bytes` bytes (a video, an audio and a data section with
/// host candidates), before JSON escaping.
pub fn fake_sdp(bytes: usize) -> String {
    const HEAD: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1 2\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS pixelstreaming\r\n";
    const VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 127\r\nc=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Xq4B\r\na=ice-pwd:6t8mF0tUe3vH0yYp6hN5q2Rk\r\n\
a=ice-options:trickle\r\na=fingerprint:sha-256 4F:1A:2C:9E:77:0B:3D:5A:91:E2:4C:88:10:6F:AB:\
3C:D5:02:7E:99:B1:44:C7:0D:2A:6B:8E:F3:15:90:CE:21\r\na=setup:actpass\r\na=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:toffset\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=sendonly\r\na=msid:pixelstreaming pixelstreaming_video\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
a=rtpmap:96 H264/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=ssrc-group:FID 2561498432 1130436790\r\na=ssrc:2561498432 cname:Yk3wPq0zJ8bT2vLs\r\n\
a=ssrc:1130436790 cname:Yk3wPq0zJ8bT2vLs\r\n";
    const AUDIO: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
a=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1;maxaveragebitrate=128000\r\n\
a=ssrc:3390121123 cname:Yk3wPq0zJ8bT2vLs\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n\
a=sctp-port:5000\r\na=max-message-size:262144\r\n";
    let mut sdp = String::with_capacity(bytes + 256);
    sdp.push_str(HEAD);
    sdp.push_str(VIDEO);
    sdp.push_str(AUDIO);
    let mut n = 0u32;
    while sdp.len() < bytes {
        sdp.push_str(&format!(
            "a=candidate:{} 1 udp 2122260223 192.168.{}.{} {} typ host generation 0 network-id 1\r\n",
            1_467_250_027 + n,
            n % 250,
            (n * 7) % 250 + 1,
            50_000 + n % 10_000
        ));
        n += 1;
    }
    sdp.truncate(bytes);
    if bytes >= 2 {
        sdp.replace_range(bytes - 2.., "\r\n");
    }
    sdp
}

/// Frames for one relay, with the SDP escaped once.
#[derive(Clone, Debug)]
pub struct Frames {
    sdp_json: String,
}

const CANDIDATE: &str = r#"{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 54400 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag Xq4B network-cost 999","sdpMid":"0","sdpMLineIndex":0}"#;

impl Frames {
    pub fn new(sdp_bytes: usize) -> Frames {
        Frames {
            sdp_json: serde_json::Value::String(fake_sdp(sdp_bytes)).to_string(),
        }
    }

    /// Streamer → player offer.
    pub fn offer(&self, player_id: &str, at: u64, bt: u64) -> String {
        format!(
            r#"{{"type":"offer","playerId":"{player_id}","sdp":{},"at":{at},"bt":{bt}}}"#,
            self.sdp_json
        )
    }

    /// Streamer → player ICE candidate.
    pub fn ice_to_player(player_id: &str, at: u64, bt: u64) -> String {
        format!(
            r#"{{"type":"iceCandidate","playerId":"{player_id}","candidate":{CANDIDATE},"at":{at},"bt":{bt}}}"#
        )
    }

    /// Player → streamer ICE candidate (the server adds `playerId`).
    pub fn ice_to_streamer(at: u64, bt: u64) -> String {
        format!(r#"{{"type":"iceCandidate","candidate":{CANDIDATE},"at":{at},"bt":{bt}}}"#)
    }

    /// Streamer → player, untimed: tells a player connection which slot of the player table it
    /// is (the way Epic's frontend learns its own id from the first offer).
    pub fn hello(player_id: &str, slot: usize) -> String {
        format!(
            r#"{{"type":"iceCandidate","playerId":"{player_id}","candidate":{CANDIDATE},"hello":{slot}}}"#
        )
    }

    pub fn endpoint_id(id: &str) -> String {
        ClientMessage::EndpointId {
            id: id.to_owned(),
            protocol_version: None,
        }
        .to_json()
    }

    pub fn subscribe(streamer_id: &str) -> String {
        ClientMessage::Subscribe {
            streamer_id: streamer_id.to_owned(),
        }
        .to_json()
    }
}

/// The `(at, bt)` stamps of a timed frame; `None` for any other frame. The stamps are the last
/// fields both as we send them and as the server re-serializes them (unknown fields last), so
/// the search runs from the end and never walks an SDP.
pub fn stamps(text: &str) -> Option<(u64, u64)> {
    let bt = number_after(text, "\"bt\":")?;
    let at = number_after(text, "\"at\":")?;
    Some((at, bt))
}

/// The `hello` slot of a frame, if it has one.
pub fn hello_slot(text: &str) -> Option<usize> {
    number_after(text, "\"hello\":").map(|n| n as usize)
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.rfind(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pxs_protocol::signalling::ClientMessage;

    #[test]
    fn fake_sdp_has_the_requested_size_and_looks_like_sdp() {
        for n in [2, 100, 3000, 10_000] {
            let sdp = fake_sdp(n);
            assert_eq!(sdp.len(), n);
            assert!(sdp.ends_with("\r\n"));
        }
        assert!(fake_sdp(3000).starts_with("v=0\r\n"));
    }

    #[test]
    fn timed_frames_are_valid_client_messages_with_stamps() {
        let f = Frames::new(3000);
        for text in [
            f.offer("Player7", 11, 10),
            Frames::ice_to_player("Player7", 11, 10),
            Frames::ice_to_streamer(11, 10),
        ] {
            let msg = ClientMessage::from_json(&text).expect("a valid frame");
            assert!(matches!(
                msg,
                ClientMessage::Offer(_) | ClientMessage::IceCandidate(_)
            ));
            assert_eq!(stamps(&text), Some((11, 10)));
            // As the server forwards it: re-serialized with the extra fields kept.
            assert_eq!(stamps(&msg.to_json()), Some((11, 10)));
        }
        assert_eq!(hello_slot(&Frames::hello("Player1", 42)), Some(42));
        assert_eq!(stamps(&Frames::hello("Player1", 42)), None);
        assert_eq!(stamps(r#"{"type":"config"}"#), None);
    }
}
