//! CPU affinity: the CPUs this process may run on, pinning a thread to one of them (a
//! reactor, with `[target] cpus`), and Linux CPU lists (`"0-3,8"`), as in
//! `/sys/devices/system/cpu/online` and `Cpus_allowed_list`.
//!
//! Invariants: CPU numbers are below what a `cpu_set_t` can name ([`SET_BITS`]), checked
//! before any bit is set; lists keep the order they were written in (it is the reactors'
//! order).

use std::io;

/// CPUs a `cpu_set_t` can name.
pub const SET_BITS: usize = libc::CPU_SETSIZE as usize;

/// The CPUs this process may run on (its affinity mask), ascending; empty if it cannot be
/// read.
pub fn allowed() -> Vec<usize> {
    let mut set = empty_set();
    // SAFETY: the kernel writes at most the size passed, which is the set's own.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads within the set: cpu < SET_BITS.
    (0..SET_BITS).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// Pins the calling thread to `cpu`; threads it starts later (io_uring's workers) inherit it.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= SET_BITS {
        return Err(io::Error::other(format!("CPU {cpu} is beyond what a CPU set can name")));
    }
    let mut set = empty_set();
    // SAFETY: CPU_SET writes within the set: cpu < SET_BITS, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the kernel reads at most the size passed, which is the set's own.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(error.kind(), format!("pinning to CPU {cpu}: {error}")));
    }
    Ok(())
}

fn empty_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is the empty set.
    unsafe { std::mem::zeroed() }
}

/// A Linux CPU list (`"3"`, `"0-3"`, `"0,4-5"`; spaces around items allowed) as the CPUs it
/// names, in the order written; the error is the item that is not a CPU or a range.
pub fn parse_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| item.to_owned());
        match item.split_once('-') {
            None => cpus.push(number(item)?),
            Some((first, last)) => {
                let (first, last) = (number(first)?, number(last)?);
                if first > last || last - first >= SET_BITS {
                    return Err(item.to_owned());
                }
                cpus.extend(first..=last);
            }
        }
    }
    Ok(cpus)
}

/// `[0, 1, 2, 5]` as `"0-2,5"`; `"none"` for no CPU.
pub fn list_text(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if j > i { format!("{}-{}", cpus[i], cpus[j]) } else { cpus[i].to_string() });
        i = j + 1;
    }
    if parts.is_empty() { String::from("none") } else { parts.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_list("3"), Ok(vec![3]));
        assert_eq!(parse_list("0-3"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(parse_list(" 5, 0-1 ,8 "), Ok(vec![5, 0, 1, 8]));
        for bad in ["", "x", "1-", "-1", "3-1", "1,,2", "0-99999", "1.5"] {
            assert!(parse_list(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_list("0, 2-x"), Err(String::from("2-x")));
        assert_eq!(list_text(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(list_text(&[4]), "4");
        assert_eq!(list_text(&[]), "none");
    }

    #[test]
    fn allowed_cpus_and_pinning() {
        let cpus = allowed();
        assert!(!cpus.is_empty() && cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
        // The kernel's own rendering of this process's mask is the same list.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let own = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
        assert_eq!(parse_list(own), Ok(cpus.clone()));
        // A thread pinned to the last CPU has that CPU alone; the process keeps its mask.
        let last = *cpus.last().unwrap();
        let pinned = std::thread::spawn(move || {
            pin_current_thread(last).unwrap();
            (allowed(), std::fs::read_to_string("/proc/thread-self/status").unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(pinned.0, vec![last]);
        assert!(pinned.1.contains(&format!("Cpus_allowed_list:\t{last}\n")), "{}", pinned.1);
        assert_eq!(allowed(), cpus);
        // A CPU no set can name is refused before any system call.
        let e = std::thread::spawn(|| pin_current_thread(SET_BITS)).join().unwrap().unwrap_err();
        assert!(e.to_string().contains("beyond what a CPU set can name"), "{e}");
    }
}
