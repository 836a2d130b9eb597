//! The quantizer of encoded frames, read back from the bitstream, for `VideoEncoderAvgQP`.
//!
//! Neither encoder wrapper exposes the QP it chose (openh264's statistics and libvpx's
//! `GET_LAST_QUANTIZER` are only reachable through unsafe FFI, which this workspace forbids), so
//! we parse the frame headers the encoder wrote:
//!
//! - **H.264**: the slice QP, `26 + pic_init_qp_minus26 (PPS) + slice_qp_delta (slice header)`,
//!   0..=51, averaged over the slices of the access unit. It is the frame's base QP: the
//!   macroblock-level `mb_qp_delta`s of the rate control are not included.
//! - **VP8**: the frame header's base quantizer index `y_ac_qi`, 0..=127 (RFC 6386 §9.6), the scale
//!   WebRTC's own VP8 QP statistics use; per-segment adjustments are not included.
//!
//! Both parsers take any bytes: a header they cannot follow gives `None`, never a panic.

/// Reads bits MSB first from an RBSP (emulation-prevention bytes already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).ok()
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    /// Signed Exp-Golomb.
    fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).ok()
    }
}

/// The SPS fields a slice header's layout depends on.
#[derive(Clone, Copy, Debug, Default)]
struct Sps {
    log2_max_frame_num: u32,
    poc_type: u32,
    log2_max_poc_lsb: u32,
    delta_pic_order_always_zero: bool,
    frame_mbs_only: bool,
}

/// The PPS fields a slice header's layout and its QP depend on.
#[derive(Clone, Copy, Debug, Default)]
struct Pps {
    sps_id: u32,
    cabac: bool,
    bottom_field_pic_order_present: bool,
    weighted_pred: bool,
    weighted_bipred_idc: u32,
    pic_init_qp: i32,
    redundant_pic_cnt_present: bool,
}

/// H.264 parameter sets seen so far (openh264 repeats them before every IDR).
#[derive(Debug, Default)]
pub struct H264Qp {
    sps: Vec<(u32, Sps)>,
    pps: Vec<(u32, Pps)>,
}

impl H264Qp {
    /// The mean slice QP of one Annex B access unit; None if it has no slice we can read.
    pub fn frame_qp(&mut self, annexb: &[u8]) -> Option<u8> {
        let mut sum = 0u32;
        let mut n = 0u32;
        for nal in nal_units(annexb) {
            let Some(&header) = nal.first() else { continue };
            let rbsp = unescape(&nal[1..]);
            match header & 0x1f {
                7 => {
                    if let Some((id, sps)) = parse_sps(&rbsp) {
                        self.sps.retain(|(i, _)| *i != id);
                        self.sps.push((id, sps));
                    }
                }
                8 => {
                    if let Some((id, pps)) = parse_pps(&rbsp) {
                        self.pps.retain(|(i, _)| *i != id);
                        self.pps.push((id, pps));
                    }
                }
                t @ (1 | 5) => {
                    if let Some(qp) = self.slice_qp(&rbsp, t == 5, (header >> 5) & 3 != 0) {
                        sum += u32::from(qp);
                        n += 1;
                    }
                }
                _ => {}
            }
        }
        (n > 0).then(|| ((sum + n / 2) / n) as u8)
    }

    fn slice_qp(&self, rbsp: &[u8], idr: bool, reference: bool) -> Option<u8> {
        let mut b = Bits::new(rbsp);
        let _first_mb = b.ue()?;
        let slice_type = b.ue()? % 5;
        let (p, bi, i) = (
            slice_type == 0 || slice_type == 3,
            slice_type == 1,
            slice_type == 2 || slice_type == 4,
        );
        let pps_id = b.ue()?;
        let pps = self.pps.iter().find(|(id, _)| *id == pps_id)?.1;
        let sps = self.sps.iter().find(|(id, _)| *id == pps.sps_id)?.1;
        let _frame_num = b.bits(sps.log2_max_frame_num)?;
        let mut field_pic = false;
        if !sps.frame_mbs_only {
            field_pic = b.flag()?;
            if field_pic {
                let _bottom = b.flag()?;
            }
        }
        if idr {
            let _idr_pic_id = b.ue()?;
        }
        if sps.poc_type == 0 {
            let _lsb = b.bits(sps.log2_max_poc_lsb)?;
            if pps.bottom_field_pic_order_present && !field_pic {
                let _delta_bottom = b.se()?;
            }
        }
        if sps.poc_type == 1 && !sps.delta_pic_order_always_zero {
            let _d0 = b.se()?;
            if pps.bottom_field_pic_order_present && !field_pic {
                let _d1 = b.se()?;
            }
        }
        if pps.redundant_pic_cnt_present {
            let _redundant = b.ue()?;
        }
        if bi {
            let _direct_spatial = b.flag()?;
        }
        if (p || bi) && b.flag()? {
            let _l0 = b.ue()?;
            if bi {
                let _l1 = b.ue()?;
            }
        }
        if !i {
            skip_ref_pic_list_modification(&mut b)?;
            if bi {
                skip_ref_pic_list_modification(&mut b)?;
            }
        }
        if (pps.weighted_pred && p) || (pps.weighted_bipred_idc == 1 && bi) {
            // pred_weight_table needs more of the SPS; openh264's baseline never writes it.
            return None;
        }
        if reference {
            if idr {
                let _no_output_of_prior_pics = b.flag()?;
                let _long_term = b.flag()?;
            } else if b.flag()? {
                loop {
                    let op = b.ue()?;
                    match op {
                        0 => break,
                        1 | 3 => {
                            let _ = b.ue()?;
                            if op == 3 {
                                let _ = b.ue()?;
                            }
                        }
                        2 | 4 | 6 => {
                            let _ = b.ue()?;
                        }
                        5 => {}
                        _ => return None,
                    }
                }
            }
        }
        if pps.cabac && !i {
            let _cabac_init_idc = b.ue()?;
        }
        let qp = 26 + pps.pic_init_qp + b.se()?;
        u8::try_from(qp).ok().filter(|q| *q <= 51)
    }
}

fn skip_ref_pic_list_modification(b: &mut Bits<'_>) -> Option<()> {
    if b.flag()? {
        for _ in 0..64 {
            match b.ue()? {
                3 => return Some(()),
                0..=2 => {
                    let _ = b.ue()?;
                }
                _ => return None,
            }
        }
        return None;
    }
    Some(())
}

fn parse_sps(rbsp: &[u8]) -> Option<(u32, Sps)> {
    let mut b = Bits::new(rbsp);
    let profile = b.bits(8)?;
    let _constraints = b.bits(8)?;
    let _level = b.bits(8)?;
    let id = b.ue()?;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        let chroma = b.ue()?;
        if chroma == 3 {
            let _separate_colour_plane = b.flag()?;
        }
        let _depth_luma = b.ue()?;
        let _depth_chroma = b.ue()?;
        let _bypass = b.flag()?;
        if b.flag()? {
            // Scaling matrices: not written by openh264; not worth following here.
            return None;
        }
    }
    let log2_max_frame_num = b.ue()? + 4;
    let poc_type = b.ue()?;
    let mut sps = Sps {
        log2_max_frame_num,
        poc_type,
        ..Default::default()
    };
    match poc_type {
        0 => sps.log2_max_poc_lsb = b.ue()? + 4,
        1 => {
            sps.delta_pic_order_always_zero = b.flag()?;
            let _non_ref = b.se()?;
            let _top_to_bottom = b.se()?;
            let cycle = b.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                let _ = b.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    if sps.log2_max_frame_num > 16 || sps.log2_max_poc_lsb > 16 {
        return None;
    }
    let _max_refs = b.ue()?;
    let _gaps = b.flag()?;
    let _width_mbs = b.ue()?;
    let _height_units = b.ue()?;
    sps.frame_mbs_only = b.flag()?;
    Some((id, sps))
}

fn parse_pps(rbsp: &[u8]) -> Option<(u32, Pps)> {
    let mut b = Bits::new(rbsp);
    let id = b.ue()?;
    let sps_id = b.ue()?;
    let cabac = b.flag()?;
    let bottom_field_pic_order_present = b.flag()?;
    if b.ue()? != 0 {
        // Slice groups (FMO): not used by WebRTC encoders.
        return None;
    }
    let _l0 = b.ue()?;
    let _l1 = b.ue()?;
    let weighted_pred = b.flag()?;
    let weighted_bipred_idc = b.bits(2)?;
    let pic_init_qp = 26 + b.se()?;
    let _pic_init_qs = b.se()?;
    let _chroma_qp_offset = b.se()?;
    let _deblocking_control = b.flag()?;
    let _constrained_intra = b.flag()?;
    let redundant_pic_cnt_present = b.flag()?;
    Some((
        id,
        Pps {
            sps_id,
            cabac,
            bottom_field_pic_order_present,
            weighted_pred,
            weighted_bipred_idc,
            pic_init_qp: pic_init_qp - 26,
            redundant_pic_cnt_present,
        },
    ))
}

/// The NAL units of an Annex B stream (without start codes).
fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next start code, without its (optional) leading zero byte.
            let mut e = s - 3;
            while e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

/// Removes emulation-prevention bytes (00 00 03 → 00 00).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// VP8's boolean entropy decoder (RFC 6386 §7).
struct BoolDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    value: u32,
    range: u32,
    bit_count: u32,
}

impl<'a> BoolDecoder<'a> {
    fn new(data: &'a [u8]) -> Option<Self> {
        let value = (u32::from(*data.first()?) << 8) | u32::from(*data.get(1)?);
        Some(BoolDecoder {
            data,
            pos: 2,
            value,
            range: 255,
            bit_count: 0,
        })
    }

    fn read(&mut self, prob: u32) -> bool {
        let split = 1 + (((self.range - 1) * prob) >> 8);
        let big_split = split << 8;
        let bit = if self.value >= big_split {
            self.range -= split;
            self.value -= big_split;
            true
        } else {
            self.range = split;
            false
        };
        while self.range < 128 {
            self.value <<= 1;
            self.range <<= 1;
            self.bit_count += 1;
            if self.bit_count == 8 {
                self.bit_count = 0;
                // Past the end the stream reads as zeros, as in libvpx.
                self.value |= u32::from(self.data.get(self.pos).copied().unwrap_or(0));
                self.pos += 1;
            }
        }
        bit
    }

    fn flag(&mut self) -> bool {
        self.read(128)
    }

    fn literal(&mut self, bits: u32) -> u32 {
        (0..bits).fold(0, |v, _| (v << 1) | u32::from(self.flag()))
    }
}

/// The base quantizer index `y_ac_qi` (0..=127) of a VP8 frame; None if it is too short.
pub fn vp8_qindex(frame: &[u8]) -> Option<u8> {
    let tag = u32::from(*frame.first()?)
        | u32::from(*frame.get(1)?) << 8
        | u32::from(*frame.get(2)?) << 16;
    let key = tag & 1 == 0;
    let first_partition = (tag >> 5) as usize;
    let start: usize = if key { 10 } else { 3 };
    if key && frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let end = start.checked_add(first_partition)?.min(frame.len());
    let mut d = BoolDecoder::new(frame.get(start..end)?)?;
    if key {
        let _color_space = d.flag();
        let _clamping = d.flag();
    }
    if d.flag() {
        // segmentation_enabled
        let update_map = d.flag();
        let update_data = d.flag();
        if update_data {
            let _abs_delta = d.flag();
            for _ in 0..4 {
                if d.flag() {
                    let _q = d.literal(7);
                    let _sign = d.flag();
                }
            }
            for _ in 0..4 {
                if d.flag() {
                    let _lf = d.literal(6);
                    let _sign = d.flag();
                }
            }
        }
        if update_map {
            for _ in 0..3 {
                if d.flag() {
                    let _prob = d.literal(8);
                }
            }
        }
    }
    let _filter_type = d.flag();
    let _level = d.literal(6);
    let _sharpness = d.literal(3);
    if d.flag() && d.flag() {
        // loop_filter_adj_enable, mode_ref_lf_delta_update
        for _ in 0..8 {
            if d.flag() {
                let _delta = d.literal(6);
                let _sign = d.flag();
            }
        }
    }
    let _partitions = d.literal(2);
    u8::try_from(d.literal(7)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{self, I420, Overlay, Stamp};
    use openh264::OpenH264API;
    use openh264::encoder::{BitRate, Encoder, EncoderConfig, QpRange, RateControlMode};
    use openh264::formats::YUVSource;
    use proptest::prelude::*;

    struct Src<'a>(&'a I420);
    impl YUVSource for Src<'_> {
        fn dimensions(&self) -> (usize, usize) {
            (self.0.width, self.0.height)
        }
        fn strides(&self) -> (usize, usize, usize) {
            (self.0.width, self.0.width / 2, self.0.width / 2)
        }
        fn y(&self) -> &[u8] {
            &self.0.y
        }
        fn u(&self) -> &[u8] {
            &self.0.u
        }
        fn v(&self) -> &[u8] {
            &self.0.v
        }
    }

    fn picture(n: u32) -> I420 {
        let mut pic = I420::new(320, 180);
        let stamp = Stamp {
            frame: n,
            wall_ms: 1_700_000_000_000 + u64::from(n) * 33,
            fps: 30,
        };
        pattern::render(&mut pic, stamp, &Overlay::default());
        pic
    }

    #[test]
    fn h264_slice_qp_is_the_qp_openh264_was_held_to() {
        for fixed in [18u8, 30, 42] {
            let config = EncoderConfig::new()
                .bitrate(BitRate::from_bps(500_000))
                .rate_control_mode(RateControlMode::Bitrate)
                .qp(QpRange::new(fixed, fixed));
            let mut enc =
                Encoder::with_api_config(OpenH264API::from_source(), config).expect("encoder");
            let mut qp = H264Qp::default();
            for n in 0..5 {
                let pic = picture(n);
                let bs = enc.encode(&Src(&pic)).expect("encodes");
                let data = bs.to_vec();
                assert_eq!(qp.frame_qp(&data), Some(fixed), "frame {n} at QP {fixed}");
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn vp8_qindex_falls_as_the_bitrate_rises() {
        let qindex_at = |kbps: u32| {
            let mut enc = vpx_encode::Encoder::new(vpx_encode::Config {
                width: 320,
                height: 180,
                timebase: [1, 30],
                bitrate: kbps,
                codec: vpx_encode::VideoCodecId::VP8,
            })
            .expect("encoder");
            let mut last = None;
            for n in 0..30 {
                let pic = picture(n);
                let mut buf = pic.y.clone();
                buf.extend_from_slice(&pic.u);
                buf.extend_from_slice(&pic.v);
                for f in enc.encode(i64::from(n), &buf).expect("encodes") {
                    last = Some(vp8_qindex(f.data).expect("a readable header"));
                }
            }
            last.expect("frames")
        };
        let (low, high) = (qindex_at(30), qindex_at(5_000));
        assert!(low <= 127 && high <= 127);
        assert!(high < low, "q index {high} at 5 Mbit/s, {low} at 30 kbit/s");
    }

    #[test]
    fn emulation_prevention_bytes_are_removed() {
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
        let units: Vec<&[u8]> = nal_units(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2]).collect();
        assert_eq!(units, vec![&[0x67u8, 1][..], &[0x68, 2][..]]);
    }

    proptest! {
        #[test]
        fn any_bytes_give_none_or_a_value_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut qp = H264Qp::default();
            if let Some(q) = qp.frame_qp(&bytes) {
                prop_assert!(q <= 51);
            }
            let mut with_start = vec![0, 0, 0, 1, 0x67];
            with_start.extend_from_slice(&bytes);
            let _ = qp.frame_qp(&with_start);
            if let Some(q) = vp8_qindex(&bytes) {
                prop_assert!(q <= 127);
            }
        }
    }
}
