//! The test pattern: an I420 picture that shows what a client needs to check a stream.
//!
//! ```text
//! ┌──────────────────────────────────────────────────────────────┐
//! │▐█ ▐ ██▌ █ ▐█  ...  timestamp strip, row 0 (48 cells)         │  0 .. H/24
//! │█ ▐█▌ ▐ ██ ▐  ...   timestamp strip, row 1 (48 cells)         │  H/24 .. H/12
//! │F 000123                          frame number                │
//! │T 1764039000123                   wall-clock ms at encode     │
//! │K 65 C 3 MOUSEDOWN                last key, clicks, last input│
//! │1280X720 30FPS                                                │
//! │                 ─┼─  crosshair at the last mouse position    │
//! │      ███  a box moving left and right, one step per frame    │
//! │▓▓▓▓▒▒▒▒░░░░  static colour bars                              │
//! └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! The strip is the machine-readable copy of the frame number and the timestamp: 2 rows × 48
//! cells across the full width, each cell white (Y 235) for 1 or black (Y 16) for 0, read left to
//! right, top row first: 32 bits frame number, 48 bits milliseconds since the Unix epoch, then a
//! CRC-16/CCITT-FALSE of those 10 bytes (big-endian), most significant bit first. Cell edges are
//! fractions of the picture (column c spans x ∈ [c·W/48, (c+1)·W/48), row r spans
//! y ∈ [r·H/24, (r+1)·H/24)), so a scaled screenshot decodes too. Read a cell by averaging the
//! luma of its central half and comparing with 128; the CRC rejects a misread.

use crate::font;

/// Luma of a 1 cell, of a 0 cell and of text (limited range, survives any decoder's conversion).
const WHITE: u8 = 235;
const BLACK: u8 = 16;
const BACKGROUND: u8 = 48;

pub const STRIP_COLS: usize = 48;
pub const STRIP_ROWS: usize = 2;
/// The strip's rows are each this fraction of the picture height.
const STRIP_ROW_DIV: usize = 24;
const STRIP_BITS: usize = STRIP_COLS * STRIP_ROWS;

/// A planar YUV 4:2:0 picture (even width and height, no padding).
#[derive(Clone)]
pub struct I420 {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl I420 {
    pub fn new(width: usize, height: usize) -> Self {
        debug_assert!(width.is_multiple_of(2) && height.is_multiple_of(2));
        I420 {
            width,
            height,
            y: vec![BACKGROUND; width * height],
            u: vec![128; width * height / 4],
            v: vec![128; width * height / 4],
        }
    }

    fn fill_rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, yuv: (u8, u8, u8)) {
        let x1 = x1.min(self.width);
        let y1 = y1.min(self.height);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        for row in y0..y1 {
            self.y[row * self.width + x0..row * self.width + x1].fill(yuv.0);
        }
        let cw = self.width / 2;
        let (cx0, cx1) = (x0 / 2, x1.div_ceil(2).min(cw));
        for row in y0 / 2..y1.div_ceil(2).min(self.height / 2) {
            self.u[row * cw + cx0..row * cw + cx1].fill(yuv.1);
            self.v[row * cw + cx0..row * cw + cx1].fill(yuv.2);
        }
    }

    fn fill_luma(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, luma: u8) {
        let x1 = x1.min(self.width);
        let y1 = y1.min(self.height);
        if x0 >= x1 {
            return;
        }
        for row in y0..y1 {
            self.y[row * self.width + x0..row * self.width + x1].fill(luma);
        }
    }
}

/// The last input a player sent, as drawn on the picture.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overlay {
    /// Quantised position (0..=65535 on each axis) of the last mouse or touch event.
    pub pointer: Option<(u16, u16)>,
    /// The last keyCode (KeyDown/KeyUp) or charCode (KeyPress).
    pub last_key: Option<u16>,
    /// MouseDown and TouchStart messages so far.
    pub clicks: u64,
    /// Name of the last decoded input message.
    pub last_input: Option<String>,
}

/// What one frame shows besides the overlay.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub frame: u32,
    pub wall_ms: u64,
    pub fps: u32,
}

/// Draws the whole picture.
pub fn render(pic: &mut I420, stamp: Stamp, overlay: &Overlay) {
    let (w, h) = (pic.width, pic.height);
    pic.y.fill(BACKGROUND);
    pic.u.fill(128);
    pic.v.fill(128);

    draw_strip(pic, stamp.frame, stamp.wall_ms);

    // Text, below the strip.
    let scale = (h / 90).max(1);
    let line = (font::GLYPH_H + 2) * scale;
    let margin = scale * 2;
    let mut ty = strip_height(h) + margin;
    let text_lines = [
        format!("F {:06}", stamp.frame),
        format!("T {}", stamp.wall_ms),
        format!(
            "K {} C {} {}",
            overlay
                .last_key
                .map(|k| k.to_string())
                .unwrap_or_else(|| "-".into()),
            overlay.clicks,
            overlay.last_input.as_deref().unwrap_or("")
        ),
        format!("{w}X{h} {}FPS", stamp.fps),
    ];
    for text in &text_lines {
        // A black band behind the text keeps it high-contrast whatever is under it.
        let width = text.chars().count() * font::ADVANCE * scale;
        pic.fill_luma(
            margin / 2,
            ty - scale,
            margin + width + scale,
            ty + line - scale,
            BLACK,
        );
        draw_text(pic, margin, ty, scale, text, WHITE);
        ty += line;
    }

    // Colour bars along the bottom.
    let bars: [(u8, u8, u8); 7] = [
        (180, 128, 128), // grey
        (168, 44, 136),  // yellow
        (145, 147, 44),  // cyan
        (133, 63, 52),   // green
        (63, 193, 204),  // magenta
        (51, 109, 212),  // red
        (28, 212, 120),  // blue
    ];
    let bar_top = h - h / 10;
    for (i, c) in bars.iter().enumerate() {
        let x0 = (i * w / bars.len()) & !1;
        let x1 = ((i + 1) * w / bars.len()) & !1;
        pic.fill_rect(x0, bar_top & !1, x1, h, *c);
    }

    // A box that moves one step per frame, bouncing between the edges.
    let size = (h / 8) & !1;
    let travel = w.saturating_sub(size).max(1);
    let step = (w / 120).max(2);
    let pos = (stamp.frame as usize * step) % (2 * travel);
    let bx = (if pos < travel { pos } else { 2 * travel - pos }) & !1;
    let by = (bar_top - size - h / 40) & !1;
    pic.fill_rect(bx, by, bx + size, by + size, (170, 40, 200));

    // Crosshair at the last pointer position.
    if let Some((qx, qy)) = overlay.pointer {
        let cx = (qx as usize * w) >> 16;
        let cy = (qy as usize * h) >> 16;
        let arm = h / 12;
        let t = (h / 240).max(1);
        pic.fill_luma(
            cx.saturating_sub(arm),
            cy.saturating_sub(t),
            cx + arm,
            cy + t,
            WHITE,
        );
        pic.fill_luma(
            cx.saturating_sub(t),
            cy.saturating_sub(arm),
            cx + t,
            cy + arm,
            WHITE,
        );
    }
}

fn draw_text(pic: &mut I420, x: usize, y: usize, scale: usize, text: &str, luma: u8) {
    for (i, c) in text.chars().enumerate() {
        let gx = x + i * font::ADVANCE * scale;
        for row in 0..font::GLYPH_H {
            for col in 0..font::GLYPH_W {
                if font::pixel(c, col, row) {
                    let px = gx + col * scale;
                    let py = y + row * scale;
                    pic.fill_luma(px, py, px + scale, py + scale, luma);
                }
            }
        }
    }
}

fn strip_height(h: usize) -> usize {
    STRIP_ROWS * h / STRIP_ROW_DIV
}

/// The 96 bits of the strip for `frame` and `wall_ms` (only the low 48 bits of the time fit).
pub fn strip_bits(frame: u32, wall_ms: u64) -> [bool; STRIP_BITS] {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&frame.to_be_bytes());
    bytes[4..10].copy_from_slice(&wall_ms.to_be_bytes()[2..]);
    let crc = crc16(&bytes[..10]);
    bytes[10..].copy_from_slice(&crc.to_be_bytes());
    let mut bits = [false; STRIP_BITS];
    for (i, bit) in bits.iter_mut().enumerate() {
        *bit = bytes[i / 8] & (0x80 >> (i % 8)) != 0;
    }
    bits
}

fn cell(w: usize, h: usize, index: usize) -> (usize, usize, usize, usize) {
    let (row, col) = (index / STRIP_COLS, index % STRIP_COLS);
    (
        col * w / STRIP_COLS,
        row * h / STRIP_ROW_DIV,
        (col + 1) * w / STRIP_COLS,
        (row + 1) * h / STRIP_ROW_DIV,
    )
}

fn draw_strip(pic: &mut I420, frame: u32, wall_ms: u64) {
    let (w, h) = (pic.width, pic.height);
    for (i, bit) in strip_bits(frame, wall_ms).iter().enumerate() {
        let (x0, y0, x1, y1) = cell(w, h, i);
        pic.fill_rect(x0, y0, x1, y1, (if *bit { WHITE } else { BLACK }, 128, 128));
    }
}

/// What the strip of a picture says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripReading {
    pub frame: u32,
    /// Milliseconds since the Unix epoch, modulo 2^48 (i.e. exact until the year 10889).
    pub wall_ms: u64,
}

/// Reads the strip from a luma plane (`stride` bytes per row). None if it does not check out.
pub fn read_strip(luma: &[u8], width: usize, height: usize, stride: usize) -> Option<StripReading> {
    if width < STRIP_COLS || height < STRIP_ROW_DIV || luma.len() < stride * (height - 1) + width {
        return None;
    }
    let mut bytes = [0u8; 12];
    for i in 0..STRIP_BITS {
        let (x0, y0, x1, y1) = cell(width, height, i);
        // The central half of the cell, away from edges blurred by compression or scaling.
        let (qx, qy) = ((x1 - x0) / 4, (y1 - y0) / 4);
        let (mut sum, mut n) = (0u64, 0u64);
        for y in y0 + qy..(y1 - qy).max(y0 + qy + 1) {
            for x in x0 + qx..(x1 - qx).max(x0 + qx + 1) {
                sum += u64::from(luma[y * stride + x]);
                n += 1;
            }
        }
        if sum > 128 * n {
            bytes[i / 8] |= 0x80 >> (i % 8);
        }
    }
    let crc = u16::from_be_bytes([bytes[10], bytes[11]]);
    if crc16(&bytes[..10]) != crc {
        return None;
    }
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&bytes[4..10]);
    Some(StripReading {
        frame: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        wall_ms: u64::from_be_bytes(ms),
    })
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF).
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for b in data {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(frame: u32, wall_ms: u64) -> Stamp {
        Stamp {
            frame,
            wall_ms,
            fps: 30,
        }
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn strip_reads_back_from_the_raw_frame() {
        for (w, h) in [(640, 360), (1280, 720), (1920, 1080), (64, 64), (854, 480)] {
            let mut pic = I420::new(w, h);
            for (frame, ms) in [(0, 0), (1, 1_764_039_000_123), (u32::MAX, (1 << 48) - 1)] {
                render(&mut pic, stamp(frame, ms), &Overlay::default());
                let r = read_strip(&pic.y, w, h, w).expect("strip decodes");
                assert_eq!(r, StripReading { frame, wall_ms: ms }, "{w}x{h}");
            }
        }
    }

    #[test]
    fn strip_survives_noise_and_rejects_damage() {
        let (w, h) = (640, 360);
        let mut pic = I420::new(w, h);
        render(
            &mut pic,
            stamp(4242, 1_764_039_000_777),
            &Overlay::default(),
        );
        // Compression-like noise: ±40 on every pixel.
        let mut noisy = pic.y.clone();
        for (i, p) in noisy.iter_mut().enumerate() {
            let d = (i * 7919 % 81) as i32 - 40;
            *p = (*p as i32 + d).clamp(0, 255) as u8;
        }
        assert_eq!(read_strip(&noisy, w, h, w).map(|r| r.frame), Some(4242));
        // Flip one cell: the CRC catches it.
        let (x0, y0, x1, y1) = cell(w, h, 20);
        for y in y0..y1 {
            for x in x0..x1 {
                pic.y[y * w + x] = 255 - pic.y[y * w + x];
            }
        }
        assert_eq!(read_strip(&pic.y, w, h, w), None);
        assert_eq!(read_strip(&[0u8; 10], w, h, w), None);
    }

    #[test]
    fn strip_reads_back_from_a_scaled_copy() {
        let (w, h) = (1280, 720);
        let mut pic = I420::new(w, h);
        render(&mut pic, stamp(77, 1_700_000_000_000), &Overlay::default());
        // Nearest-neighbour downscale to 640x360, as a screenshot of a smaller player would be.
        let (sw, sh) = (640, 360);
        let small: Vec<u8> = (0..sw * sh)
            .map(|i| pic.y[(i / sw) * 2 * w + (i % sw) * 2])
            .collect();
        assert_eq!(read_strip(&small, sw, sh, sw).map(|r| r.frame), Some(77));
    }

    #[test]
    fn pattern_changes_with_frame_and_input() {
        let (w, h) = (640, 360);
        let mut a = I420::new(w, h);
        let mut b = I420::new(w, h);
        render(&mut a, stamp(1, 5), &Overlay::default());
        render(&mut b, stamp(2, 5), &Overlay::default());
        assert_ne!(a.y, b.y, "the moving box and the counter change");
        let overlay = Overlay {
            pointer: Some((32768, 32768)),
            last_key: Some(65),
            clicks: 1,
            last_input: Some("MouseDown".into()),
        };
        render(&mut b, stamp(1, 5), &overlay);
        assert_ne!(a.y, b.y);
        // The crosshair's centre is white.
        assert_eq!(b.y[(h / 2) * w + w / 2], WHITE);
    }
}
