//! systemd's readiness and watchdog protocol (sd_notify(3)) in a few lines, without
//! libsystemd and without unsafe code: a unit with `Type=notify` starts the daemon with
//! `NOTIFY_SOCKET` naming a Unix datagram socket (a path, or an abstract address written
//! with a leading `@`); each message is one datagram of `KEY=VALUE` lines.
//!
//! fabriq-target has its own (`fabriq_target::notify`); depending on that crate would link
//! the whole target (io_uring, the data plane) into the provisioner for forty lines.
//!
//! Invariants: a [`Notifier`] exists only when `NOTIFY_SOCKET` names a usable address;
//! sending never blocks (a full queue on systemd's side is an error to log, not a stall).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The socket systemd listens on.
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// `None` when not started by systemd with `Type=notify`.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var("NOTIFY_SOCKET").ok().filter(|p| !p.is_empty())?;
        let address = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            None => SocketAddr::from_pathname(&path),
        };
        let address = address.map_err(|e| tracing::warn!(%e, path, "NOTIFY_SOCKET is not usable")).ok()?;
        let socket = UnixDatagram::unbound().ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(Notifier { socket, address })
    }

    fn send(&self, message: &str) -> io::Result<()> {
        self.socket.send_to_addr(message.as_bytes(), &self.address).map(|_| ())
    }

    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", status.replace('\n', " ")))
    }

    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// The watchdog interval systemd expects pings within, if the unit has one for us.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok())
            && pid != std::process::id()
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_as_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier =
            Notifier { socket: UnixDatagram::unbound().unwrap(), address: SocketAddr::from_pathname(&path).unwrap() };
        notifier.ready("serving\non 8080").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving on 8080");
    }
}
