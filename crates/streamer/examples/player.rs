//! A headless player for trying `pxs streamer` by hand: subscribes to a streamer through a
//! signalling server's player port, receives and decodes the video, and prints one JSON line of
//! statistics per second.
//!
//! ```text
//! cargo run --release -p pxs-streamer --example player -- 127.0.0.1:8080 DefaultStreamer 10
//! ```

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:80".into())
        .parse()
        .expect("player address host:port");
    let id = args.next().unwrap_or_else(|| "DefaultStreamer".into());
    let secs: u64 = args
        .next()
        .map(|s| s.parse().expect("seconds"))
        .unwrap_or(10);
    let mut p = common::Player::subscribe(addr, &id).await;
    p.decode_limit = usize::MAX;
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut last_frames, mut last_decoded) = (0, 0);
    while Instant::now() < end {
        let tick = Instant::now() + Duration::from_secs(1);
        let left = tick.saturating_duration_since(Instant::now());
        p.run_until(left + Duration::from_secs(5), "a second", |_| {
            Instant::now() >= tick
        })
        .await;
        let new = &p.decoded[last_decoded..];
        let lat: Vec<i64> = new
            .iter()
            .filter_map(|f| f.strip.map(|s| f.decoded_at_ms as i64 - s.wall_ms as i64))
            .collect();
        let size = new.last().map(|f| format!("{}x{}", f.width, f.height));
        println!(
            "{}",
            serde_json::json!({
                "frames": p.frames - last_frames,
                "decoded": new.len(),
                "size": size,
                "strip_latency_ms_avg": if lat.is_empty() { None } else { Some(lat.iter().sum::<i64>() as f64 / lat.len() as f64) },
                "strip_latency_ms_max": lat.iter().max(),
            })
        );
        last_frames = p.frames;
        last_decoded = p.decoded.len();
    }
}
