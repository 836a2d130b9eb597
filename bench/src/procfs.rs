//! What the benchmark reads from `/proc`: resident memory and CPU time of a process, or of some
//! of its threads.

use anyhow::{Context, bail};
use std::time::Duration;

/// `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`. It is 100 on every Linux ABI
/// that tokio runs on.
const TICKS_PER_SECOND: u64 = 100;

/// Resident memory (`VmRSS`) of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_vm_rss(&text).with_context(|| format!("no VmRSS in {path}"))
}

/// User plus system CPU time of a whole process (every thread, living or exited).
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    match parse_stat_cpu_ticks(&text) {
        Some(t) => Ok(ticks(t)),
        None => bail!("cannot parse {path}"),
    }
}

/// User plus system CPU time of the threads of `pid` whose name starts with `prefix`.
pub fn threads_cpu(pid: u32, prefix: &str) -> anyhow::Result<Duration> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let task = entry?.path();
        // A thread may exit between the listing and the reads: skip it.
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
            continue;
        };
        total += parse_stat_cpu_ticks(&stat).unwrap_or(0);
    }
    Ok(ticks(total))
}

/// CPU time spent busy (not idle nor waiting for I/O) by the whole machine, summed over its
/// cores, from the first line of `/proc/stat`. Over a phase it shows whether anything besides
/// the relay and the benchmark was running.
pub fn machine_busy() -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    match text.lines().next().and_then(parse_machine_busy_ticks) {
        Some(t) => Ok(ticks(t)),
        None => bail!("cannot parse /proc/stat"),
    }
}

fn ticks(t: u64) -> Duration {
    Duration::from_millis(t * 1000 / TICKS_PER_SECOND)
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: all but idle and iowait.
fn parse_machine_busy_ticks(line: &str) -> Option<u64> {
    let mut f = line.strip_prefix("cpu ")?.split_whitespace();
    let mut busy = 0;
    for i in 0..8 {
        let v: u64 = f.next()?.parse().ok()?;
        if i != 3 && i != 4 {
            busy += v;
        }
    }
    Some(busy)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `utime + stime` (fields 14 and 15) of a `stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_lines_are_parsed() {
        let stat =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 5000 0 0 0 170 30 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(200));
        assert_eq!(
            parse_vm_rss("Name:\tpxs\nVmRSS:\t   12345 kB\n"),
            Some(12345)
        );
        assert!(rss_kib(std::process::id()).is_ok_and(|k| k > 0));
        assert!(process_cpu(std::process::id()).is_ok());
    }
}
