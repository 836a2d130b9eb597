//! The SFU's relay wrappers: when UE streams through Epic's SFU with `multiplex:true`, every
//! message on the one SFU ⇄ UE data channel is wrapped with the player it is from or for.

use super::message::EncodeError;
use super::wire::{DecodeError, Reader, push_utf16le, utf16_len, utf16le_to_string};
use crate::signalling::PlayerId;

/// Id of `Multiplexed`: `[199][u16 LE byte length][player id UTF-16LE][original message]`.
pub const MULTIPLEXED_ID: u8 = 199;
/// Id of `ChannelRelayStatus`: `[198][u16 LE byte length][player id UTF-16LE][u8 1 open, 0 closed]`.
pub const CHANNEL_RELAY_STATUS_ID: u8 = 198;

/// A relay wrapper, as Epic's SFU writes it. The ids are fixed: the SFU hard-codes 198 and 199
/// whatever the protocol tables say. The length is in **bytes** (twice the id's UTF-16 length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// A message from (SFU → UE) or for (UE → SFU) one player, carried unchanged.
    Multiplexed {
        player_id: PlayerId,
        message: &'a [u8],
    },
    /// SFU → UE: a player's data channel opened (`open`) or closed.
    ChannelRelayStatus { player_id: PlayerId, open: bool },
}

impl<'a> Envelope<'a> {
    /// Unwraps a relay envelope; `Ok(None)` if `bytes` is not one (an ordinary message).
    /// A status flag other than 0 counts as open. Never panics.
    pub fn decode(bytes: &'a [u8]) -> Result<Option<Envelope<'a>>, DecodeError> {
        let Some((&id, payload)) = bytes.split_first() else {
            return Ok(None);
        };
        if id != MULTIPLEXED_ID && id != CHANNEL_RELAY_STATUS_ID {
            return Ok(None);
        }
        let mut r = Reader::new(id, payload);
        let len = usize::from(r.u16()?);
        let player_id = PlayerId(utf16le_to_string(id, r.take(len)?)?);
        if id == MULTIPLEXED_ID {
            return Ok(Some(Envelope::Multiplexed {
                player_id,
                message: r.rest(),
            }));
        }
        let open = r.u8()? != 0;
        r.finish()?;
        Ok(Some(Envelope::ChannelRelayStatus { player_id, open }))
    }

    pub fn player_id(&self) -> &PlayerId {
        match self {
            Envelope::Multiplexed { player_id, .. }
            | Envelope::ChannelRelayStatus { player_id, .. } => player_id,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let player_id = self.player_id().as_str();
        let units = utf16_len(player_id);
        let byte_len = units
            .checked_mul(2)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or(EncodeError::TextTooLong { units })?;
        let (id, tail) = match self {
            Envelope::Multiplexed { message, .. } => (MULTIPLEXED_ID, *message),
            Envelope::ChannelRelayStatus { open, .. } => (
                CHANNEL_RELAY_STATUS_ID,
                if *open { &[1u8][..] } else { &[0u8][..] },
            ),
        };
        let mut out = Vec::with_capacity(3 + usize::from(byte_len) + tail.len());
        out.push(id);
        out.extend_from_slice(&byte_len.to_le_bytes());
        push_utf16le(&mut out, player_id);
        out.extend_from_slice(tail);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EPIC_MAX_MESSAGE_LEN, InputEvent, ProtocolTable};
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[test]
    fn multiplexed_wraps_a_message_with_the_player_id_byte_length() {
        let inner = [72, 0, 0x00, 0x40, 0x00, 0xC0];
        let env = Envelope::Multiplexed {
            player_id: "P1".into(),
            message: &inner,
        };
        let bytes = env.encode().unwrap();
        assert_eq!(
            bytes,
            [199, 4, 0, b'P', 0, b'1', 0, 72, 0, 0x00, 0x40, 0x00, 0xC0]
        );
        let back = Envelope::decode(&bytes).unwrap().unwrap();
        assert_eq!(back, env);
        // The inner message decodes as usual.
        let Envelope::Multiplexed { message, .. } = back else {
            panic!("not multiplexed")
        };
        assert_eq!(
            InputEvent::decode(
                &ProtocolTable::default_to_streamer(),
                message,
                EPIC_MAX_MESSAGE_LEN
            )
            .unwrap(),
            InputEvent::MouseDown {
                button: 0,
                x: 16384,
                y: 49152
            }
        );
    }

    #[rstest]
    #[case(true, 1)]
    #[case(false, 0)]
    fn channel_relay_status_carries_a_flag(#[case] open: bool, #[case] flag: u8) {
        let env = Envelope::ChannelRelayStatus {
            player_id: "Player0".into(),
            open,
        };
        let bytes = env.encode().unwrap();
        let mut expected = vec![198, 14, 0];
        expected.extend("Player0".bytes().flat_map(|b| [b, 0]));
        expected.push(flag);
        assert_eq!(bytes, expected);
        assert_eq!(Envelope::decode(&bytes), Ok(Some(env)));
    }

    #[rstest]
    #[case(&[], Ok(None))]
    #[case(&[72, 0, 0, 0, 0, 0], Ok(None))]
    #[case(&[199], Err(DecodeError::Truncated { id: 199, needed: 2, available: 0 }))]
    #[case(&[199, 4, 0, b'P', 0], Err(DecodeError::Truncated { id: 199, needed: 4, available: 2 }))]
    #[case(&[199, 3, 0, b'P', 0, b'1'], Err(DecodeError::OddUtf16Length { id: 199 }))]
    #[case(&[199, 2, 0, 0x00, 0xDC], Err(DecodeError::InvalidUtf16 { id: 199 }))]
    #[case(&[198, 2, 0, b'P', 0], Err(DecodeError::Truncated { id: 198, needed: 1, available: 0 }))]
    #[case(&[198, 2, 0, b'P', 0, 1, 1], Err(DecodeError::TrailingBytes { id: 198, extra: 1 }))]
    fn malformed_envelopes_are_errors(
        #[case] bytes: &[u8],
        #[case] expected: Result<Option<Envelope<'static>>, DecodeError>,
    ) {
        assert_eq!(Envelope::decode(bytes), expected);
    }

    #[test]
    fn empty_player_ids_and_messages_are_allowed_and_nonzero_flags_mean_open() {
        assert_eq!(
            Envelope::decode(&[199, 0, 0]),
            Ok(Some(Envelope::Multiplexed {
                player_id: "".into(),
                message: &[]
            }))
        );
        assert_eq!(
            Envelope::decode(&[198, 0, 0, 7]),
            Ok(Some(Envelope::ChannelRelayStatus {
                player_id: "".into(),
                open: true
            }))
        );
    }

    #[test]
    fn over_long_player_ids_cannot_be_encoded() {
        let env = Envelope::ChannelRelayStatus {
            player_id: PlayerId("a".repeat(32768)),
            open: true,
        };
        assert_eq!(env.encode(), Err(EncodeError::TextTooLong { units: 32768 }));
        let env = Envelope::ChannelRelayStatus {
            player_id: PlayerId("a".repeat(32767)),
            open: true,
        };
        assert!(env.encode().is_ok());
    }

    proptest! {
        #[test]
        fn envelope_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Envelope::decode(&bytes);
        }

        #[test]
        fn envelopes_round_trip(pid in any::<String>(), message in proptest::collection::vec(any::<u8>(), 0..50), open in any::<bool>()) {
            let env = Envelope::Multiplexed { player_id: PlayerId(pid.clone()), message: &message };
            let bytes = env.encode().unwrap();
            prop_assert_eq!(Envelope::decode(&bytes).unwrap(), Some(env));
            let env = Envelope::ChannelRelayStatus { player_id: PlayerId(pid), open };
            let bytes = env.encode().unwrap();
            prop_assert_eq!(Envelope::decode(&bytes).unwrap(), Some(env));
        }
    }
}
