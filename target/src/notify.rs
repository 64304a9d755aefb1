//! systemd's readiness and watchdog protocol (sd_notify(3)), written here without
//! libsystemd.
//!
//! A unit with `Type=notify` starts the daemon with `NOTIFY_SOCKET` naming a Unix
//! datagram socket: a file system path, or a Linux abstract address written with a
//! leading `@`. Each message is one datagram of newline-separated `KEY=VALUE`
//! assignments; `READY=1` tells systemd the service is up (fabriq-target sends it
//! only once every listener is bound), `WATCHDOG=1` is the keep-alive ping.
//!
//! Invariants:
//! - a [`Notifier`] exists only when `NOTIFY_SOCKET` named a usable address;
//! - every message is one datagram from an unbound socket of this process, which is
//!   what `NotifyAccess=main` accepts;
//! - sending never blocks: the socket is non-blocking, and a full queue on systemd's
//!   side is an error for the caller to log, not a stall of the caller's thread;
//! - a caller's text cannot add assignments: newlines in a status become spaces.
//!
//! The environment is read, never changed. libsystemd can unset `NOTIFY_SOCKET` so
//! that child processes do not inherit it, but fabriq-target starts no children,
//! `NotifyAccess=main` makes systemd ignore any other sender anyway, and changing
//! the environment of a threaded process is `unsafe` in Rust 2024 (libc's `getenv`
//! in another thread may read it at the same time).

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    watchdog_interval: Option<Duration>,
}

/// Why a notification could not be sent, or `NOTIFY_SOCKET` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an abstract @name")]
    UnsupportedAddress(String),
    #[error("NOTIFY_SOCKET={value:?} is not a usable socket address: {error}")]
    BadAddress { value: String, error: io::Error },
    #[error("cannot create a socket to notify the service manager: {0}")]
    Socket(io::Error),
    #[error("cannot send {state} to the service manager: {error}")]
    Send { state: &'static str, error: io::Error },
}

impl Notifier {
    /// The notifier systemd asked for, or None when the daemon does not run under
    /// `Type=notify` (no `NOTIFY_SOCKET`). An unusable `NOTIFY_SOCKET` is logged and
    /// treated as absent: the daemon still serves, and systemd's start time-out
    /// reports the missing readiness.
    pub fn from_env() -> Option<Notifier> {
        let var = |name| std::env::var_os(name);
        let (socket, usec, pid) = (var("NOTIFY_SOCKET"), var("WATCHDOG_USEC"), var("WATCHDOG_PID"));
        match Notifier::from_vars(socket.as_deref(), usec.as_deref(), pid.as_deref(), std::process::id()) {
            Ok(notifier) => notifier,
            Err(error) => {
                tracing::warn!(%error, "not notifying systemd");
                None
            }
        }
    }

    /// [`Notifier::from_env`] with the variables passed in, for `pid` as our process.
    fn from_vars(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&OsStr>,
        watchdog_pid: Option<&OsStr>,
        pid: u32,
    ) -> Result<Option<Notifier>, NotifyError> {
        let Some(value) = notify_socket.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let bytes = value.as_bytes();
        let bad_address = |error| NotifyError::BadAddress { value: value.to_string_lossy().into_owned(), error };
        let address = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]).map_err(bad_address)?,
            Some(b'/') => SocketAddr::from_pathname(value).map_err(bad_address)?,
            _ => {
                return Err(NotifyError::UnsupportedAddress(value.to_string_lossy().into_owned()));
            }
        };
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        socket.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Some(Notifier { socket, address, watchdog_interval: watchdog_interval(watchdog_usec, watchdog_pid, pid) }))
    }

    /// `READY=1`: start-up is complete; send once every listener is bound.
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.send("READY=1", "READY=1")
    }

    /// `STOPPING=1`: shutdown has begun (SIGTERM received).
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1", "STOPPING=1")
    }

    /// `STATUS=…`: one line for `systemctl status`; newlines become spaces.
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        let line: String = text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
        self.send(&format!("STATUS={line}"), "STATUS")
    }

    /// `WATCHDOG=1`: the keep-alive ping, due every half [`Notifier::watchdog_interval`].
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1", "WATCHDOG=1")
    }

    /// `EXTEND_TIMEOUT_USEC=…`: asks systemd for `by` more time than the current
    /// start or stop time-out, e.g. while in-flight I/O drains on shutdown.
    pub fn extend_timeout(&self, by: Duration) -> Result<(), NotifyError> {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()), "EXTEND_TIMEOUT_USEC")
    }

    /// The watchdog time-out systemd enforces (`WatchdogSec=`), when it watches this
    /// process: `WATCHDOG_USEC` set and non-zero, and `WATCHDOG_PID`, if set, our pid.
    /// Ping at half of it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_interval
    }

    fn send(&self, message: &str, state: &'static str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(|_| ())
            .map_err(|error| NotifyError::Send { state, error })
    }
}

fn watchdog_interval(usec: Option<&OsStr>, watchdog_pid: Option<&OsStr>, pid: u32) -> Option<Duration> {
    if let Some(watchdog_pid) = watchdog_pid {
        let for_us = watchdog_pid.to_str().and_then(|p| p.parse::<u32>().ok()) == Some(pid);
        if !for_us {
            return None;
        }
    }
    let usec: u64 = usec?.to_str()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    fn received(listener: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).expect("a datagram within the read time-out");
        String::from_utf8(buf[..n].to_vec()).expect("UTF-8")
    }

    fn exercise(listener: &UnixDatagram, notifier: &Notifier) {
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        notifier.ready().unwrap();
        assert_eq!(received(listener), "READY=1");
        notifier.status("serving 1 subsystem\nREADY=1").unwrap();
        assert_eq!(received(listener), "STATUS=serving 1 subsystem READY=1");
        notifier.watchdog().unwrap();
        assert_eq!(received(listener), "WATCHDOG=1");
        notifier.extend_timeout(Duration::from_secs(3)).unwrap();
        assert_eq!(received(listener), "EXTEND_TIMEOUT_USEC=3000000");
        notifier.stopping().unwrap();
        assert_eq!(received(listener), "STOPPING=1");
    }

    #[test]
    fn path_socket_receives_each_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier =
            Notifier::from_vars(Some(path.as_os_str()), None, None, 1).unwrap().expect("a notifier for a path");
        exercise(&listener, &notifier);
    }

    #[test]
    fn abstract_socket_receives_each_state() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("fabriq-notify-test-{}-{nanos}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let notifier = Notifier::from_vars(os(&format!("@{name}")), None, None, 1)
            .unwrap()
            .expect("a notifier for an abstract name");
        exercise(&listener, &notifier);
    }

    #[test]
    fn no_socket_means_no_notifier() {
        assert!(Notifier::from_vars(None, os("1000000"), None, 1).unwrap().is_none());
        assert!(Notifier::from_vars(os(""), None, None, 1).unwrap().is_none());
    }

    #[test]
    fn other_address_forms_are_refused() {
        let error = Notifier::from_vars(os("vsock:2:1234"), None, None, 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "NOTIFY_SOCKET=\"vsock:2:1234\" is neither an absolute path nor an abstract @name"
        );
        let long = format!("/{}", "x".repeat(200));
        assert!(matches!(Notifier::from_vars(os(&long), None, None, 1), Err(NotifyError::BadAddress { .. })));
    }

    #[test]
    fn sending_to_a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let notifier = Notifier::from_vars(Some(path.as_os_str()), None, None, 1).unwrap().unwrap();
        let error = notifier.ready().unwrap_err();
        assert!(matches!(error, NotifyError::Send { state: "READY=1", .. }), "{error}");
    }

    #[test]
    fn watchdog_interval_honours_watchdog_pid() {
        let ten_s = Some(Duration::from_secs(10));
        assert_eq!(watchdog_interval(os("10000000"), None, 42), ten_s);
        assert_eq!(watchdog_interval(os("10000000"), os("42"), 42), ten_s);
        assert_eq!(watchdog_interval(os("10000000"), os("43"), 42), None);
        assert_eq!(watchdog_interval(os("10000000"), os("not a pid"), 42), None);
        assert_eq!(watchdog_interval(os("0"), None, 42), None);
        assert_eq!(watchdog_interval(os("ten"), None, 42), None);
        assert_eq!(watchdog_interval(None, os("42"), 42), None);
    }

    #[test]
    fn notifier_carries_the_watchdog_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let pid = std::process::id().to_string();
        let notifier =
            Notifier::from_vars(Some(path.as_os_str()), os("2500000"), os(&pid), std::process::id()).unwrap().unwrap();
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_millis(2500)));
    }
}
