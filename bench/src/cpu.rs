//! CPU time of processes and threads, for "IOPS per CPU-second": the target's
//! from `/proc/PID/stat` (utime + stime, clock ticks), the bench process's
//! from `getrusage`, and a job thread's own from `CLOCK_THREAD_CPUTIME_ID`.
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
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| CpuError::Read { pid, error })?;
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
    // SAFETY: sysconf has no memory effects.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0).unwrap_or(100);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_second)
}

/// User plus system time of this whole process so far.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage writes one rusage struct, which all-zero initializes.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rusage we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> Duration {
    // SAFETY: timespec is a plain C struct; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_nasty_name() {
        let text = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 123 456 789";
        assert_eq!(parse_stat_ticks(text), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(process_cpu(pid).is_ok());
        assert!(self_cpu() > Duration::ZERO);
        assert!(thread_cpu() > Duration::ZERO);
    }
}
