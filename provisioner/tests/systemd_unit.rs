//! The provisioner under systemd: the unit in `systemd/` passes `systemd-analyze verify`
//! without a word of warning, the example configuration parses, a refused configuration
//! exits 78 (the unit's `RestartPreventExitStatus=`), and the daemon speaks the notify
//! protocol: `READY=1` only once its API answers, `STOPPING=1` and exit 0 on SIGTERM.
//!
//! `systemd-analyze` is part of Debian's `systemd` package, which `scripts/test` installs;
//! without it the verify test fails rather than skips.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fabriq_provisioner::config::{Backend, Config};

const INSTALLED_BINARY: &str = "/usr/bin/fabriq-provisioner";
const BINARY: &str = env!("CARGO_BIN_EXE_fabriq-provisioner");

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// The unit as shipped, ExecStart pointing at the binary under test (verify refuses a unit
/// whose binary does not exist).
fn unit_for_test() -> String {
    let unit = std::fs::read_to_string(repo_file("systemd/fabriq-provisioner.service")).unwrap();
    assert_eq!(unit.lines().filter(|l| l.starts_with("ExecStart=")).count(), 1);
    let wanted = format!("ExecStart={INSTALLED_BINARY} --config /etc/fabriq/provisioner.toml");
    assert!(unit.lines().any(|l| l == wanted), "the unit runs {wanted}");
    unit.replace(&format!("ExecStart={INSTALLED_BINARY}"), &format!("ExecStart={BINARY}"))
}

fn verify(unit: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabriq-provisioner.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run systemd-analyze ({error}): install Debian's `systemd` package (scripts/test does as root)"
            )
        });
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

#[test]
fn unit_passes_systemd_analyze_verify_without_warnings() {
    let unit = unit_for_test();
    for line in ["Type=notify", "NotifyAccess=main", "DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes"] {
        assert!(unit.lines().any(|l| l == line), "the unit has {line}");
    }
    let (success, printed) = verify(&unit);
    assert!(success, "systemd-analyze verify failed:\n{printed}");
    assert!(printed.trim().is_empty(), "systemd-analyze verify warned about the unit:\n{printed}");
    // The same check sees a mistake (verify exits 0 on an unknown key and only prints it).
    let (_, printed) = verify(&unit.replace("[Service]\n", "[Service]\nWatchdogSecs=10s\n"));
    assert!(printed.contains("Unknown key 'WatchdogSecs'"), "{printed}");
}

#[test]
fn example_configuration_parses_and_its_etcd_lines_too() {
    let path = repo_file("systemd/provisioner.toml");
    let config = Config::load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.provisioner.data_dir, Path::new("/var/lib/fabriq-provisioner"));
    assert_eq!(config.store.backend, Backend::Redb);
    let text = std::fs::read_to_string(&path).unwrap();
    let etcd = text
        .replace("backend = \"redb\"", "backend = \"etcd\"")
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") && !rest.starts_with("tls_") => rest.to_owned(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::parse(&etcd, "provisioner.toml (uncommented)").unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((config.store.backend, config.store.endpoints.len()), (Backend::Etcd, 3));
    // --check-config prints it with every default, and that parses back to the same.
    let output = Command::new(BINARY).arg("--check-config").arg("--config").arg(&path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(Config::parse(&printed, "--check-config output").unwrap(), Config::load(&path).unwrap());
}

#[test]
fn a_refused_configuration_exits_78_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[provisioner]\nreconcile_interval_ms = 5\n").unwrap();
    let output = Command::new(BINARY).arg("--config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("reconcile_interval_ms") && stderr.contains("bad.toml"), "{stderr}");
    let unit = std::fs::read_to_string(repo_file("systemd/fabriq-provisioner.service")).unwrap();
    assert!(unit.lines().any(|l| l == "RestartPreventExitStatus=78"));
}

#[test]
fn ready_is_sent_once_the_api_answers_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!(
            "[provisioner]\ndata_dir = \"{}\"\n[api]\naddress = \"127.0.0.1:{port}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BINARY)
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("READY=1 within 30 s");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.starts_with("READY=1\n") && message.contains("STATUS="), "{message}");
    // Ready means the API answers now.
    let health = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(health.is_ok(), "the API listens once READY=1 is sent");
    // The watchdog is pinged (every half interval).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = socket.recv(&mut buf).expect("a watchdog ping");
        if &buf[..n] == b"WATCHDOG=1" {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    // The token file was generated, private.
    let tokens = dir.path().join("data/api-tokens");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o777, 0o600);
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stopping = false;
    while !stopping {
        let n = socket.recv(&mut buf).expect("STOPPING=1");
        stopping = &buf[..n] == b"STOPPING=1";
        assert!(Instant::now() < deadline);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends the daemon cleanly: {status}");
}
