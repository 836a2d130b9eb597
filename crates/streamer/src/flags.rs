//! Command-line parsing: Unreal Engine's launch flags plus our own options.
//!
//! A session server launches `pxs streamer` exactly as it launches a packaged UE app, so the
//! streamer accepts UE's syntax: `-Name=value` or a bare `-Switch`, names case-insensitive, and
//! every flag it does not know ignored without error (UE apps get many: `-RenderOffScreen`,
//! `-AllowCPUDevices`, `-Log=...`). Positional words (a map or project name) are ignored too.
//!
//! Our own options use `--kebab-case`, with the value either attached (`--stats-interval=2`) or as
//! the next word (`--stats-interval 2`). They are rejected when unknown: a typo in a test script
//! must not silently disable a fault.
//!
//! Precedence of the signalling address, as in UE: `-PixelStreamingSignallingURL` (the current
//! name), then `-PixelStreamingURL` (deprecated), then `-PixelStreamingIP` + `-PixelStreamingPort`
//! (deprecated; either alone fills in the other from the default `127.0.0.1:8888`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The signalling address UE uses when it is given none.
pub const DEFAULT_SIGNALLING_URL: &str = "ws://127.0.0.1:8888";
/// UE's default streamer id.
pub const DEFAULT_STREAMER_ID: &str = "DefaultStreamer";
/// Largest picture side: Epic's limit (issue #50) and within openh264's.
pub const MAX_SIDE: u32 = 4096;
/// Smallest picture side we draw (the test pattern needs room for its strip and digits).
pub const MIN_SIDE: u32 = 64;

/// The video codec, from `-PixelStreamingEncoderCodec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    H264,
    Vp8,
}

/// Scriptable faults, in the style of a mock driver.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Abort (SIGABRT) this long after start.
    pub crash_after: Option<Duration>,
    /// Exit cleanly with `exit_code` this long after start.
    pub exit_after: Option<Duration>,
    pub exit_code: i32,
    /// Wait this long before the first signalling connection.
    pub start_delay: Option<Duration>,
    /// Never connect to signalling (but keep running).
    pub no_signalling: bool,
    /// Freeze this long after start: stop reading and answering, keep every socket open.
    pub hang_after: Option<Duration>,
}

/// Everything the streamer needs to run, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub signalling_url: String,
    pub streamer_id: String,
    pub width: u32,
    pub height: u32,
    /// `-ForceRes`: accepted; our picture always has exactly the requested size.
    pub force_res: bool,
    pub codec: Codec,
    /// Frames per second (`-PixelStreamingWebRTCMaxFps`).
    pub max_fps: u32,
    /// A keyframe every N frames (`-PixelStreamingEncoderKeyframeInterval`); None: only on demand.
    pub keyframe_interval: Option<u32>,
    /// Seconds between signalling `ping`s (`-PixelStreamingSignalingKeepAliveInterval`).
    pub keepalive: Option<Duration>,
    /// Encoder target bitrate in bits per second.
    pub bitrate_bps: u32,
    /// `-AllowPixelStreamingCommands`: reported in InitialSettings; ConsoleCommands are only logged.
    pub allow_commands: bool,
    /// `-PixelStreamingDisableLatencyTester`: LatencyTest requests are not answered.
    pub disable_latency_tester: bool,
    /// Offer and send the Opus tone (off with `-PixelStreamingWebRTCDisableTransmitAudio`).
    pub audio: bool,
    /// `--input-log FILE`: one JSON line per decoded data-channel message.
    pub input_log: Option<PathBuf>,
    /// `--stats-interval SECS`: a JSON stats line on stdout every SECS.
    pub stats_interval: Option<Duration>,
    /// `--ice-ip IP`: the address offered as our host candidate (default: the local address of
    /// the signalling connection).
    pub ice_ip: Option<IpAddr>,
    pub faults: Faults,
    /// UE flags and positional words we accepted and ignored, for one log line at start.
    pub ignored: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            signalling_url: DEFAULT_SIGNALLING_URL.into(),
            streamer_id: DEFAULT_STREAMER_ID.into(),
            width: 1280,
            height: 720,
            force_res: false,
            codec: Codec::H264,
            max_fps: 30,
            keyframe_interval: None,
            keepalive: None,
            bitrate_bps: 4_000_000,
            allow_commands: false,
            disable_latency_tester: false,
            audio: true,
            input_log: None,
            stats_interval: None,
            ice_ip: None,
            faults: Faults::default(),
            ignored: Vec::new(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Box<Settings>),
    Help,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("invalid value {value:?} for {flag}: {expected}")]
    BadValue {
        flag: String,
        value: String,
        expected: String,
    },
    #[error("{flag} needs a value")]
    MissingValue { flag: String },
    #[error("unknown option {0} (our own options are listed by --help; UE -Flags are ignored)")]
    UnknownOption(String),
    #[error("{0}")]
    Invalid(String),
}

pub const HELP: &str = "\
pxs streamer: a stand-in for an Unreal Engine app with Pixel Streaming.

UE launch flags (-Name=value, names case-insensitive, unknown -Flags ignored):
  -PixelStreamingSignallingURL=ws://host:port   signalling server (default ws://127.0.0.1:8888)
  -PixelStreamingURL=...                       deprecated alias
  -PixelStreamingIP=IP -PixelStreamingPort=N    deprecated pair
  -PixelStreamingID=ID                          streamer id (default DefaultStreamer)
  -ResX=W -ResY=H [-ForceRes]                   picture size (default 1280x720; even, 64..4096)
  -PixelStreamingEncoderCodec=H264|VP8          video codec (default H264)
  -PixelStreamingWebRTCMaxFps=N                 frame rate (default 30)
  -PixelStreamingWebRTCMaxBitrate=BPS           caps the encoder bitrate
  -PixelStreamingEncoderKeyframeInterval=N      keyframe every N frames (default -1: on demand)
  -PixelStreamingSignalingKeepAliveInterval=S   send a signalling ping every S seconds
  -AllowPixelStreamingCommands                  report ConsoleCommands as allowed
  -PixelStreamingDisableLatencyTester           do not answer LatencyTest
  -PixelStreamingWebRTCDisableTransmitAudio     offer no audio (default: a 440 Hz Opus tone)

Our options:
  --input-log FILE        one JSON line per decoded data-channel message
  --stats-interval SECS   a JSON stats line on stdout every SECS
  --bitrate-kbps N        encoder target bitrate (default 4000)
  --ice-ip IP             address of our ICE host candidate (default: the signalling socket's)
  --crash-after SECS      abort (SIGABRT) after SECS
  --exit-after SECS       exit after SECS with --exit-code (default 0)
  --exit-code N
  --start-delay SECS      wait SECS before connecting to signalling
  --no-signalling         run but never connect
  --hang-after SECS       stop answering after SECS, keep sockets open
  --help
";

/// Parses the arguments after the subcommand name.
pub fn parse<I, S>(args: I) -> Result<Parsed, FlagError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut s = Settings::default();
    let mut signalling_url: Option<String> = None;
    let mut legacy_url: Option<String> = None;
    let mut ip: Option<String> = None;
    let mut port: Option<u16> = None;
    let mut max_bitrate: Option<u64> = None;
    let mut bitrate_kbps: Option<u32> = None;
    let mut exit_code_given = false;

    let mut args = args.into_iter().map(Into::into).peekable();
    while let Some(arg) = args.next() {
        if let Some(long) = arg.strip_prefix("--") {
            let (name, attached) = split_value(long);
            let flag = format!("--{name}");
            let mut value = || -> Result<String, FlagError> {
                match &attached {
                    Some(v) => Ok(v.clone()),
                    None => args
                        .next()
                        .ok_or(FlagError::MissingValue { flag: flag.clone() }),
                }
            };
            match name {
                "help" => return Ok(Parsed::Help),
                "input-log" => s.input_log = Some(PathBuf::from(value()?)),
                "stats-interval" => s.stats_interval = Some(secs(&flag, &value()?)?),
                "bitrate-kbps" => bitrate_kbps = Some(positive(&flag, &value()?)?),
                "ice-ip" => {
                    let v = value()?;
                    s.ice_ip = Some(v.parse().map_err(|_| bad(&flag, &v, "an IP address"))?);
                }
                "crash-after" => s.faults.crash_after = Some(secs(&flag, &value()?)?),
                "exit-after" => s.faults.exit_after = Some(secs(&flag, &value()?)?),
                "exit-code" => {
                    let v = value()?;
                    s.faults.exit_code = v
                        .parse::<u8>()
                        .map_err(|_| bad(&flag, &v, "an integer 0..=255"))?
                        .into();
                    exit_code_given = true;
                }
                "start-delay" => s.faults.start_delay = Some(secs(&flag, &value()?)?),
                "hang-after" => s.faults.hang_after = Some(secs(&flag, &value()?)?),
                "no-signalling" | "no-signaling" => {
                    if let Some(v) = attached {
                        s.faults.no_signalling = boolean(&flag, &v)?;
                    } else {
                        s.faults.no_signalling = true;
                    }
                }
                _ => return Err(FlagError::UnknownOption(flag)),
            }
            continue;
        }
        let Some(ue) = arg.strip_prefix('-') else {
            s.ignored.push(arg);
            continue;
        };
        if ue.is_empty() {
            s.ignored.push(arg);
            continue;
        }
        let (name, value) = split_value(ue);
        let value = value.map(|v| unquote(&v).to_owned());
        let lower = name.to_ascii_lowercase();
        let flag = format!("-{name}");
        let need = |v: &Option<String>| -> Result<String, FlagError> {
            v.clone()
                .ok_or_else(|| FlagError::MissingValue { flag: flag.clone() })
        };
        match lower.as_str() {
            "pixelstreamingsignallingurl" | "pixelstreamingsignalingurl" => {
                signalling_url = Some(ws_url(&flag, &need(&value)?)?)
            }
            "pixelstreamingurl" => legacy_url = Some(ws_url(&flag, &need(&value)?)?),
            "pixelstreamingip" => ip = Some(need(&value)?),
            "pixelstreamingport" => {
                let v = need(&value)?;
                port = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad(&flag, &v, "a port 1..=65535"))?,
                );
            }
            "pixelstreamingid" => {
                let v = need(&value)?;
                if v.is_empty() {
                    return Err(bad(&flag, &v, "a non-empty streamer id"));
                }
                s.streamer_id = v;
            }
            "resx" => s.width = side(&flag, &need(&value)?)?,
            "resy" => s.height = side(&flag, &need(&value)?)?,
            "forceres" => s.force_res = true,
            "pixelstreamingencodercodec" => {
                let v = need(&value)?;
                s.codec = match v.to_ascii_uppercase().as_str() {
                    "H264" => Codec::H264,
                    "VP8" => Codec::Vp8,
                    "VP9" | "AV1" => {
                        return Err(bad(
                            &flag,
                            &v,
                            "H264 or VP8 (pxs streamer does not encode VP9 or AV1)",
                        ));
                    }
                    _ => return Err(bad(&flag, &v, "one of H264, VP8, VP9, AV1")),
                }
            }
            "pixelstreamingwebrtcmaxfps" => {
                let v = need(&value)?;
                let fps: u32 = positive(&flag, &v)?;
                if fps > 240 {
                    return Err(bad(&flag, &v, "a frame rate 1..=240"));
                }
                s.max_fps = fps;
            }
            "pixelstreamingwebrtcmaxbitrate" => {
                let v = need(&value)?;
                max_bitrate = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|b| *b >= 10_000)
                        .ok_or_else(|| bad(&flag, &v, "bits per second, at least 10000"))?,
                );
            }
            "pixelstreamingencoderkeyframeinterval" => {
                let v = need(&value)?;
                let n: i64 = v
                    .parse()
                    .map_err(|_| bad(&flag, &v, "a frame count (-1 or 0: on demand only)"))?;
                s.keyframe_interval = if n <= 0 {
                    None
                } else {
                    Some(u32::try_from(n).map_err(|_| bad(&flag, &v, "a smaller frame count"))?)
                };
            }
            "pixelstreamingsignalingkeepaliveinterval"
            | "pixelstreamingsignallingkeepaliveinterval" => {
                let v = need(&value)?;
                let d = secs(&flag, &v)?;
                s.keepalive = (!d.is_zero()).then_some(d);
            }
            "allowpixelstreamingcommands" => {
                s.allow_commands = value.as_deref().map(truthy).unwrap_or(true)
            }
            "pixelstreamingdisablelatencytester" => {
                s.disable_latency_tester = value.as_deref().map(truthy).unwrap_or(true)
            }
            "pixelstreamingwebrtcdisabletransmitaudio" => {
                s.audio = !value.as_deref().map(truthy).unwrap_or(true)
            }
            _ => s.ignored.push(arg.clone()),
        }
    }

    s.signalling_url = match (signalling_url, legacy_url, ip, port) {
        (Some(url), ..) | (None, Some(url), ..) => url,
        (None, None, None, None) => DEFAULT_SIGNALLING_URL.into(),
        (None, None, ip, port) => {
            let ip = ip.unwrap_or_else(|| "127.0.0.1".into());
            let host = if ip.contains(':') && !ip.starts_with('[') {
                format!("[{ip}]")
            } else {
                ip
            };
            format!("ws://{host}:{}", port.unwrap_or(8888))
        }
    };
    if let Some(kbps) = bitrate_kbps {
        s.bitrate_bps = kbps.saturating_mul(1000);
    }
    if let Some(max) = max_bitrate {
        s.bitrate_bps = s.bitrate_bps.min(u32::try_from(max).unwrap_or(u32::MAX));
    }
    if exit_code_given && s.faults.exit_after.is_none() {
        return Err(FlagError::Invalid(
            "--exit-code needs --exit-after SECS".into(),
        ));
    }
    // libvpx is linked on Unix only (the Windows build of `pxs` is checked without it).
    if s.codec == Codec::Vp8 && !cfg!(unix) {
        return Err(FlagError::Invalid(
            "-PixelStreamingEncoderCodec=VP8: this build of pxs streamer has no libvpx; use H264"
                .into(),
        ));
    }
    Ok(Parsed::Run(Box::new(s)))
}

/// `name=value` → (`name`, Some(`value`)); `name` → (`name`, None).
fn split_value(s: &str) -> (&str, Option<String>) {
    match s.split_once('=') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (s, None),
    }
}

/// UE strips one pair of surrounding double quotes from a value (`-PixelStreamingURL="ws://..."`
/// when no shell removed them).
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn truthy(v: &str) -> bool {
    !matches!(
        v.to_ascii_lowercase().as_str(),
        "false" | "0" | "no" | "off"
    )
}

fn bad(flag: &str, value: &str, expected: &str) -> FlagError {
    FlagError::BadValue {
        flag: flag.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

fn boolean(flag: &str, v: &str) -> Result<bool, FlagError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad(flag, v, "true or false")),
    }
}

fn secs(flag: &str, v: &str) -> Result<Duration, FlagError> {
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0 && *x < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| bad(flag, v, "a number of seconds, e.g. 2 or 0.5"))
}

fn positive(flag: &str, v: &str) -> Result<u32, FlagError> {
    v.parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| bad(flag, v, "a positive integer"))
}

fn side(flag: &str, v: &str) -> Result<u32, FlagError> {
    let n = v
        .parse::<u32>()
        .map_err(|_| bad(flag, v, "a size in pixels"))?;
    if !(MIN_SIDE..=MAX_SIDE).contains(&n) || n % 2 != 0 {
        return Err(bad(
            flag,
            v,
            &format!("an even size in pixels, {MIN_SIDE}..={MAX_SIDE}"),
        ));
    }
    Ok(n)
}

fn ws_url(flag: &str, v: &str) -> Result<String, FlagError> {
    let lower = v.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("ws://")
        .or_else(|| lower.strip_prefix("wss://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(v.to_owned()),
        _ => Err(bad(flag, v, "a ws:// or wss:// URL with a host")),
    }
}

/// Checks a resolution asked for at run time (the `Resolution.Width/Height` command).
pub fn valid_resolution(w: u64, h: u64) -> bool {
    let ok = |n: u64| (MIN_SIDE as u64..=MAX_SIDE as u64).contains(&n) && n.is_multiple_of(2);
    ok(w) && ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn run(args: &[&str]) -> Settings {
        match parse(args.iter().copied()) {
            Ok(Parsed::Run(s)) => *s,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        match parse(args.iter().copied()) {
            Err(e) => e.to_string(),
            other => panic!("{args:?} should fail, gave {other:?}"),
        }
    }

    #[test]
    fn defaults_are_ues() {
        let s = run(&[]);
        assert_eq!(s.signalling_url, "ws://127.0.0.1:8888");
        assert_eq!(s.streamer_id, "DefaultStreamer");
        assert_eq!((s.width, s.height, s.max_fps), (1280, 720, 30));
        assert_eq!(s.codec, Codec::H264);
        assert_eq!(s.keyframe_interval, None);
        assert_eq!(s.faults, Faults::default());
    }

    #[rstest]
    #[case(&["-PixelStreamingURL=ws://10.0.0.1:9999"], "ws://10.0.0.1:9999")]
    #[case(&["-pixelstreamingurl=ws://a:1"], "ws://a:1")]
    #[case(&["-PIXELSTREAMINGSIGNALLINGURL=wss://host/path"], "wss://host/path")]
    #[case(&["-PixelStreamingURL=ws://old:1", "-PixelStreamingSignallingURL=ws://new:2"], "ws://new:2")]
    #[case(&["-PixelStreamingSignallingURL=ws://new:2", "-PixelStreamingURL=ws://old:1"], "ws://new:2")]
    #[case(&["-PixelStreamingIP=10.1.2.3", "-PixelStreamingPort=8890"], "ws://10.1.2.3:8890")]
    #[case(&["-PixelStreamingIP=10.1.2.3"], "ws://10.1.2.3:8888")]
    #[case(&["-PixelStreamingPort=7000"], "ws://127.0.0.1:7000")]
    #[case(&["-pixelstreamingip=::1", "-PIXELSTREAMINGPORT=7000"], "ws://[::1]:7000")]
    #[case(&["-PixelStreamingIP=10.1.2.3", "-PixelStreamingURL=ws://u:1"], "ws://u:1")]
    #[case(&["-PixelStreamingURL=\"ws://quoted:1\""], "ws://quoted:1")]
    #[case(&["-PixelStreamingURL=ws://127.0.0.1:9/?token=s3cret"], "ws://127.0.0.1:9/?token=s3cret")]
    fn signalling_address_precedence(#[case] args: &[&str], #[case] url: &str) {
        assert_eq!(run(args).signalling_url, url);
    }

    #[test]
    fn ue_flags_are_case_insensitive() {
        let s = run(&[
            "-resx=640",
            "-RESY=360",
            "-forceres",
            "-pixelstreamingid=Game",
            "-PIXELSTREAMINGWEBRTCMAXFPS=60",
            "-PixelStreamingEncoderKeyframeInterval=120",
            "-pixelstreamingencodercodec=h264",
            "-PixelStreamingSignalingKeepAliveInterval=5",
            "-allowpixelstreamingcommands",
        ]);
        assert_eq!((s.width, s.height), (640, 360));
        assert!(s.force_res);
        assert_eq!(s.streamer_id, "Game");
        assert_eq!(s.max_fps, 60);
        assert_eq!(s.keyframe_interval, Some(120));
        assert_eq!(s.keepalive, Some(Duration::from_secs(5)));
        assert!(s.allow_commands);
    }

    #[test]
    fn vp8_and_no_audio_are_ue_flags() {
        let s = run(&[
            "-PixelStreamingEncoderCodec=vp8",
            "-PixelStreamingWebRTCDisableTransmitAudio",
        ]);
        assert_eq!(s.codec, Codec::Vp8);
        assert!(!s.audio);
        let s = run(&["-PixelStreamingWebRTCDisableTransmitAudio=false"]);
        assert!(s.audio && s.codec == Codec::H264);
    }

    #[test]
    fn unknown_ue_flags_and_positionals_are_ignored() {
        let s = run(&[
            "MyProject",
            "-RenderOffScreen",
            "-AllowSoftwareRendering",
            "-Log=Minimal.log",
            "-warp",
            "-dx12",
            "-PixelStreamingEncoderMinQuality=20",
            "-ResX=800",
            "-ResY=600",
        ]);
        assert_eq!((s.width, s.height), (800, 600));
        assert_eq!(s.ignored.len(), 7);
        assert!(s.ignored.contains(&"-RenderOffScreen".to_owned()));
    }

    #[test]
    fn our_options_take_attached_or_separate_values() {
        let s = run(&[
            "--input-log",
            "/tmp/in.jsonl",
            "--stats-interval=2.5",
            "--crash-after",
            "3",
            "--exit-after=1",
            "--exit-code",
            "7",
            "--start-delay",
            "0.5",
            "--no-signalling",
            "--hang-after",
            "4",
            "--bitrate-kbps",
            "1500",
            "--ice-ip",
            "10.0.0.5",
        ]);
        assert_eq!(s.input_log, Some(PathBuf::from("/tmp/in.jsonl")));
        assert_eq!(s.stats_interval, Some(Duration::from_millis(2500)));
        let f = s.faults;
        assert_eq!(f.crash_after, Some(Duration::from_secs(3)));
        assert_eq!(f.exit_after, Some(Duration::from_secs(1)));
        assert_eq!(f.exit_code, 7);
        assert_eq!(f.start_delay, Some(Duration::from_millis(500)));
        assert!(f.no_signalling);
        assert_eq!(f.hang_after, Some(Duration::from_secs(4)));
        assert_eq!(s.bitrate_bps, 1_500_000);
        assert_eq!(s.ice_ip, Some("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn max_bitrate_caps_the_encoder() {
        let s = run(&[
            "--bitrate-kbps=8000",
            "-PixelStreamingWebRTCMaxBitrate=2000000",
        ]);
        assert_eq!(s.bitrate_bps, 2_000_000);
    }

    #[test]
    fn help_is_recognised() {
        assert_eq!(parse(["--help"]), Ok(Parsed::Help));
    }

    #[rstest]
    #[case(&["-ResX=abc"], "invalid value \"abc\" for -ResX")]
    #[case(&["-ResX=641"], "an even size")]
    #[case(&["-resy=10"], "for -resy")]
    #[case(&["-ResX=99999"], "-ResX")]
    #[case(&["-ResX"], "-ResX needs a value")]
    #[case(&["-PixelStreamingURL=http://x:1"], "a ws:// or wss:// URL")]
    #[case(&["-PixelStreamingURL=ws://"], "a ws:// or wss:// URL")]
    #[case(&["-PixelStreamingPort=0"], "a port")]
    #[case(&["-PixelStreamingPort=70000"], "a port")]
    #[case(&["-PixelStreamingEncoderCodec=H265"], "one of H264, VP8")]
    #[case(&["-PixelStreamingEncoderCodec=VP9"], "does not encode VP9")]
    #[case(&["-PixelStreamingWebRTCMaxFps=0"], "a positive integer")]
    #[case(&["-PixelStreamingWebRTCMaxFps=1000"], "1..=240")]
    #[case(&["-PixelStreamingID="], "non-empty")]
    #[case(&["--crash-after", "soon"], "a number of seconds")]
    #[case(&["--crash-after=-1"], "a number of seconds")]
    #[case(&["--exit-after=1", "--exit-code=300"], "0..=255")]
    #[case(&["--exit-code=3"], "--exit-code needs --exit-after")]
    #[case(&["--stats-interval"], "--stats-interval needs a value")]
    #[case(&["--crash-afterr=1"], "unknown option --crash-afterr")]
    #[case(&["--ice-ip=nope"], "an IP address")]
    fn bad_values_are_clear_errors(#[case] args: &[&str], #[case] contains: &str) {
        let e = err(args);
        assert!(e.contains(contains), "{args:?}: {e}");
    }

    #[test]
    fn runtime_resolution_check() {
        assert!(valid_resolution(640, 360));
        assert!(!valid_resolution(641, 360));
        assert!(!valid_resolution(0, 360));
        assert!(!valid_resolution(8192, 360));
    }
}
