//! CPU time of processes and threads, for "IOPS per CPU-second": utime +
//! stime from `/proc/PID/stat` (the target, this process) and from
//! `/proc/thread-self/stat` (a job thread), in clock ticks of 10 ms.
//!
//! Invariants: `/proc` parsing skips the command name by its last `)`, since
//! a name may hold spaces and parentheses; a process that vanished is an
//! error, never a zero.

use std::time::Duration;

/// Why a process's CPU time could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// `/proc/PID/stat` could not be read (no such process?).
    #[error("reading /proc/{pid}/stat: {error}")]
    Read {
        /// The process.
        pid: u32,
        /// Why.
        error: std::io::Error,
    },
    /// Its text did not have the fields expected.
    #[error("/proc/{pid}/stat does not parse")]
    Parse {
        /// The process.
        pid: u32,
    },
}

/// User plus system time of process `pid` so far.
pub fn process_cpu(pid: u32) -> Result<Duration, CpuError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|error| CpuError::Read { pid, error })?;
    let ticks = parse_stat_ticks(&text).ok_or(CpuError::Parse { pid })?;
    Ok(ticks_to_duration(ticks))
}

/// utime + stime, in clock ticks, from the text of a `/proc/PID/stat`.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Fields after the name start at field 3 (state); utime is 14, stime 15.
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / USER_HZ))
}

/// Clock ticks per second of `/proc` times: USER_HZ, which Linux fixes at
/// 100 for user space on every architecture (what `sysconf(_SC_CLK_TCK)`
/// returns), whatever the kernel's own HZ.
const USER_HZ: u64 = 100;

/// User plus system time of this whole process so far.
pub fn self_cpu() -> Duration {
    process_cpu(std::process::id()).unwrap_or(Duration::ZERO)
}

/// CPU time of the calling thread so far (10 ms resolution).
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|text| parse_stat_ticks(&text))
        .map_or(Duration::ZERO, ticks_to_duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_nasty_name() {
        let text = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 123 456 789";
        assert_eq!(parse_stat_ticks(text), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(ticks_to_duration(325), Duration::from_millis(3250));
    }

    #[test]
    fn own_process_and_thread_are_readable() {
        // Burn CPU until clock ticks are charged to this thread and to the process (bounded:
        // a loaded machine may take a while to schedule us for 10 ms; the two are accounted
        // separately by the kernel, so one may show a tick before the other).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while (thread_cpu().is_zero() || self_cpu().is_zero()) && start.elapsed() < Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(process_cpu(std::process::id()).is_ok());
        assert!(self_cpu() > Duration::ZERO);
        assert!(thread_cpu() > Duration::ZERO);
    }
}
