//! The open-loop send schedule of a relay phase: which message is due when, of which kind, for
//! which player. Pure: message `i` is a function of `i` alone, so a sender that falls behind
//! still stamps each message with the time it *should* have left (no coordinated omission).

use std::time::Duration;

/// What a planned message is and which way it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Streamer → player `offer` carrying an SDP of `--sdp-bytes`.
    Offer,
    /// Streamer → player `iceCandidate`.
    IceToPlayer,
    /// Player → streamer `iceCandidate` (the server stamps the player's id on it).
    IceToStreamer,
}

/// One message of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub seq: u64,
    /// Intended send time, in nanoseconds after the start of the phase.
    pub at_ns: u64,
    pub kind: Kind,
    /// Index of the player the message is for (or from), `0..players`.
    pub player: u32,
}

/// `rate` messages per second for `duration`, evenly spaced; a fraction `offer_fraction` of them
/// offers, the rest ICE candidates split evenly between the two directions; players drawn by a
/// fixed hash of the sequence number so that every player gets about the same share.
#[derive(Clone, Debug)]
pub struct Schedule {
    rate: u64,
    count: u64,
    players: u32,
    offer_fraction: f64,
    seed: u64,
}

impl Schedule {
    pub fn new(rate: u64, duration: Duration, players: u32, offer_fraction: f64) -> Schedule {
        let rate = rate.max(1);
        let count = (duration.as_secs_f64() * rate as f64).round() as u64;
        Schedule {
            rate,
            count,
            players: players.max(1),
            offer_fraction: offer_fraction.clamp(0.0, 1.0),
            seed: 0x05ee_d0fb_37c4,
        }
    }

    /// Messages in the whole schedule.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Intended send time of message `seq`, in nanoseconds after the start.
    pub fn at_ns(&self, seq: u64) -> u64 {
        (u128::from(seq) * 1_000_000_000 / u128::from(self.rate)) as u64
    }

    pub fn get(&self, seq: u64) -> Planned {
        let offers_before = |i: u64| (i as f64 * self.offer_fraction).floor() as u64;
        let kind = if offers_before(seq + 1) > offers_before(seq) {
            Kind::Offer
        } else if (seq - offers_before(seq)).is_multiple_of(2) {
            Kind::IceToPlayer
        } else {
            Kind::IceToStreamer
        };
        Planned {
            seq,
            at_ns: self.at_ns(seq),
            kind,
            player: (splitmix64(self.seed ^ seq) % u64::from(self.players)) as u32,
        }
    }

    /// Average player → streamer messages per second that each player sends: must stay under
    /// the server's per-player rate limit.
    pub fn per_player_upstream_rate(&self) -> f64 {
        self.rate as f64 * (1.0 - self.offer_fraction) / 2.0 / f64::from(self.players)
    }

    pub fn iter(&self) -> impl Iterator<Item = Planned> + '_ {
        (0..self.count).map(|i| self.get(i))
    }
}

/// A fixed, well-mixing 64-bit hash (Steele et al., SplitMix64's finaliser).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_schedule_is_evenly_spaced_mixed_and_spread() {
        // The --quick relay phase: 2,000 msg/s for 3 s over 200 players.
        let s = Schedule::new(2000, Duration::from_secs(3), 200, 0.5);
        assert_eq!(s.len(), 6000);
        let all: Vec<Planned> = s.iter().collect();
        assert!(all.windows(2).all(|w| w[1].at_ns - w[0].at_ns == 500_000));
        assert!(all.last().is_some_and(|p| p.at_ns < 3_000_000_000));
        let count = |k| all.iter().filter(|p| p.kind == k).count();
        assert_eq!(count(Kind::Offer), 3000);
        assert_eq!(count(Kind::IceToPlayer), 1500);
        assert_eq!(count(Kind::IceToStreamer), 1500);
        let mut per_player = vec![0u32; 200];
        for p in &all {
            per_player[p.player as usize] += 1;
        }
        // 30 each on average; a fair hash keeps every player near it.
        assert!(
            per_player.iter().all(|&n| (5..=60).contains(&n)),
            "{per_player:?}"
        );
        assert!(s.per_player_upstream_rate() < 10.0);
    }

    #[test]
    fn odd_fractions_still_sum_to_the_whole() {
        let s = Schedule::new(999, Duration::from_millis(1500), 7, 0.3);
        let offers = s.iter().filter(|p| p.kind == Kind::Offer).count() as f64;
        assert!((offers / s.len() as f64 - 0.3).abs() < 0.01);
        assert!(s.iter().all(|p| p.player < 7));
    }
}
