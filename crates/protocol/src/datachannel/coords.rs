//! Pointer coordinates as Epic's frontend sends them (`Util/InputCoordTranslator.ts`).
//!
//! Positions are normalised to the video rectangle (0 at the left/top edge, 1 at the right/
//! bottom), letterboxing accounted for, then scaled by 65536 into a `uint16`; a position off the
//! video is sent as 65535. Deltas are normalised by **half** the player element's size (as
//! Epic's code does) and scaled by 32767 into an `int16`.
//!
//! Where Epic's `DataView` writes would wrap (a position of exactly 1.0 becomes 65536, written
//! as 0; a delta past ±1 wraps round), we saturate instead: 1.0 gives 65535, deltas clamp to
//! the `i16` range.

/// Sent for both coordinates of a position off the video.
pub const OUT_OF_RANGE: u16 = 65535;
const POSITION_SCALE: f64 = 65536.0;
const DELTA_SCALE: f64 = 32767.0;

/// A normalised position (0..=1) as the `uint16` Epic sends: ×65536, truncated, 1.0 saturating
/// to 65535. Anything outside 0..=1 (or NaN) is [`OUT_OF_RANGE`].
///
/// 25% of the width is 16384; 75% is 49152.
pub fn quantise_position(normalised: f64) -> u16 {
    if !(0.0..=1.0).contains(&normalised) {
        return OUT_OF_RANGE;
    }
    // `as` saturates: 1.0 × 65536 becomes 65535.
    (normalised * POSITION_SCALE) as u16
}

/// A normalised delta (-1..=1) as the `int16` Epic sends: ×32767, truncated toward zero,
/// saturating outside the `i16` range; NaN is 0.
pub fn quantise_delta(normalised: f64) -> i16 {
    (normalised * DELTA_SCALE) as i16
}

/// The normalised position a quantised one stands for (÷65536, as the frontend's inverse does).
pub fn position_from_quantised(q: u16) -> f64 {
    f64::from(q) / POSITION_SCALE
}

/// The normalised delta a quantised one stands for (÷32767).
pub fn delta_from_quantised(q: i16) -> f64 {
    f64::from(q) / DELTA_SCALE
}

/// A quantised position and whether it is on the video (touch messages send this as `valid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub x: u16,
    pub y: u16,
    pub in_range: bool,
}

/// Translates coordinates relative to the player element (CSS pixels) into what Epic's frontend
/// sends, given the element's size and the video's. The video is fitted inside the element
/// keeping its aspect ratio, so one axis may have black bars.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoordTranslator {
    player_width: f64,
    player_height: f64,
    /// How much larger the element's aspect ratio is than the video's (≥ 1).
    ratio: f64,
    /// The element is taller (relative to its width) than the video: bars above and below.
    player_is_larger: bool,
}

impl CoordTranslator {
    /// `None` unless every size is finite and positive.
    pub fn new(
        player_width: f64,
        player_height: f64,
        video_width: f64,
        video_height: f64,
    ) -> Option<CoordTranslator> {
        let sizes = [player_width, player_height, video_width, video_height];
        if !sizes.iter().all(|s| s.is_finite() && *s > 0.0) {
            return None;
        }
        let player_aspect = player_height / player_width;
        let video_aspect = video_height / video_width;
        let player_is_larger = player_aspect > video_aspect;
        let ratio = if player_is_larger {
            player_aspect / video_aspect
        } else {
            video_aspect / player_aspect
        };
        Some(CoordTranslator {
            player_width,
            player_height,
            ratio,
            player_is_larger,
        })
    }

    /// Element coordinates → normalised video coordinates (outside 0..=1 when off the video).
    pub fn normalise(&self, x: f64, y: f64) -> (f64, f64) {
        let nx = x / self.player_width;
        let ny = y / self.player_height;
        if self.player_is_larger {
            (nx, self.ratio * (ny - 0.5) + 0.5)
        } else {
            (self.ratio * (nx - 0.5) + 0.5, ny)
        }
    }

    /// Element coordinates → the quantised position Epic sends; both coordinates are
    /// [`OUT_OF_RANGE`] when either is off the video.
    pub fn position(&self, x: f64, y: f64) -> Position {
        let (nx, ny) = self.normalise(x, y);
        let on_video = |n: f64| (0.0..=1.0).contains(&n);
        if on_video(nx) && on_video(ny) {
            Position {
                x: quantise_position(nx),
                y: quantise_position(ny),
                in_range: true,
            }
        } else {
            Position {
                x: OUT_OF_RANGE,
                y: OUT_OF_RANGE,
                in_range: false,
            }
        }
    }

    /// A movement in element pixels → the quantised deltas Epic sends.
    pub fn delta(&self, dx: f64, dy: f64) -> (i16, i16) {
        let half_w = 0.5 * self.player_width;
        let half_h = 0.5 * self.player_height;
        let (nx, ny) = if self.player_is_larger {
            (dx / half_w, self.ratio * dy / half_h)
        } else {
            (self.ratio * dx / half_w, dy / half_h)
        };
        (quantise_delta(nx), quantise_delta(ny))
    }

    /// A quantised position → element coordinates (the inverse of [`position`](Self::position)).
    pub fn untranslate(&self, x: u16, y: u16) -> (f64, f64) {
        let nx = position_from_quantised(x);
        let ny = position_from_quantised(y);
        let (nx, ny) = if self.player_is_larger {
            (nx, (ny - 0.5) / self.ratio + 0.5)
        } else {
            ((nx - 0.5) / self.ratio + 0.5, ny)
        };
        (nx * self.player_width, ny * self.player_height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case(0.0, 0)]
    #[case(0.25, 16384)]
    #[case(0.5, 32768)]
    #[case(0.75, 49152)]
    #[case(0.999_99, 65535)]
    #[case(1.0, 65535)]
    #[case(-0.000_1, OUT_OF_RANGE)]
    #[case(1.000_1, OUT_OF_RANGE)]
    #[case(f64::NAN, OUT_OF_RANGE)]
    #[case(f64::INFINITY, OUT_OF_RANGE)]
    fn positions_quantise_like_epics_frontend(#[case] n: f64, #[case] q: u16) {
        assert_eq!(quantise_position(n), q);
    }

    #[rstest]
    #[case(0.0, 0)]
    #[case(0.5, 16383)]
    #[case(-0.5, -16383)]
    #[case(1.0, 32767)]
    #[case(-1.0, -32767)]
    #[case(3.0, 32767)]
    #[case(-3.0, -32768)]
    #[case(f64::NAN, 0)]
    fn deltas_quantise_like_epics_frontend(#[case] n: f64, #[case] q: i16) {
        assert_eq!(quantise_delta(n), q);
    }

    #[test]
    fn quantised_values_map_back() {
        assert_eq!(position_from_quantised(16384), 0.25);
        assert_eq!(delta_from_quantised(-32767), -1.0);
    }

    #[test]
    fn matching_aspect_ratios_need_no_letterboxing() {
        let t = CoordTranslator::new(1000.0, 500.0, 1920.0, 960.0).unwrap();
        assert_eq!(
            t.position(250.0, 375.0),
            Position {
                x: 16384,
                y: 49152,
                in_range: true
            }
        );
        assert_eq!(t.delta(500.0, -125.0), (32767, -16383));
        assert_eq!(t.untranslate(16384, 49152), (250.0, 375.0));
    }

    #[test]
    fn bars_above_and_below_are_off_the_video() {
        // A square element showing a 2:1 video: bars of 250 px above and below.
        let t = CoordTranslator::new(1000.0, 1000.0, 1920.0, 960.0).unwrap();
        assert_eq!(t.normalise(0.0, 250.0), (0.0, 0.0));
        assert_eq!(t.position(500.0, 500.0).y, 32768);
        let bar = t.position(500.0, 100.0);
        assert_eq!(
            bar,
            Position {
                x: OUT_OF_RANGE,
                y: OUT_OF_RANGE,
                in_range: false
            }
        );
        // Vertical movement counts double: the video is half the element's height.
        assert_eq!(t.delta(0.0, 250.0), (0, 32767));
    }

    #[test]
    fn bars_left_and_right_are_off_the_video() {
        // A 2:1 element showing a square video: bars of 250 px left and right.
        let t = CoordTranslator::new(1000.0, 500.0, 720.0, 720.0).unwrap();
        assert_eq!(t.normalise(250.0, 0.0), (0.0, 0.0));
        assert_eq!(t.normalise(750.0, 500.0), (1.0, 1.0));
        assert!(!t.position(100.0, 250.0).in_range);
        assert_eq!(t.untranslate(0, 0), (250.0, 0.0));
    }

    #[rstest]
    #[case(0.0, 1.0, 1.0, 1.0)]
    #[case(1.0, -1.0, 1.0, 1.0)]
    #[case(1.0, 1.0, f64::NAN, 1.0)]
    #[case(1.0, 1.0, 1.0, f64::INFINITY)]
    fn degenerate_sizes_are_refused(
        #[case] pw: f64,
        #[case] ph: f64,
        #[case] vw: f64,
        #[case] vh: f64,
    ) {
        assert!(CoordTranslator::new(pw, ph, vw, vh).is_none());
    }

    proptest! {
        #[test]
        fn positions_on_the_video_survive_a_round_trip(
            pw in 100.0..4000.0f64, ph in 100.0..4000.0f64,
            vw in 100.0..4000.0f64, vh in 100.0..4000.0f64,
            fx in 0.001..0.999f64, fy in 0.001..0.999f64,
        ) {
            let t = CoordTranslator::new(pw, ph, vw, vh).unwrap();
            // A point inside the video: untranslate the normalised fraction.
            let qx = quantise_position(fx);
            let qy = quantise_position(fy);
            let (x, y) = t.untranslate(qx, qy);
            let p = t.position(x, y);
            prop_assert!(p.in_range);
            // Within one quantisation step (floating point may land just below a step).
            prop_assert!(p.x.abs_diff(qx) <= 1 && p.y.abs_diff(qy) <= 1, "{:?} vs {} {}", p, qx, qy);
        }

        #[test]
        fn quantising_never_panics(n in any::<f64>()) {
            let _ = quantise_position(n);
            let _ = quantise_delta(n);
        }
    }
}
