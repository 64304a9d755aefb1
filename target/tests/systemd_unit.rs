//! The unit and the example configuration in `systemd/` stay valid: the unit passes
//! `systemd-analyze verify` without a word of warning, and the example parses.
//!
//! `systemd-analyze` is part of Debian's `systemd` package, which `scripts/test`
//! installs; without it these tests fail rather than skip, so a machine that cannot
//! check the unit never reports it checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use fabriq_target::config::Config;

const INSTALLED_BINARY: &str = "/usr/bin/fabriq-target";

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// The unit as shipped, with ExecStart pointing at the binary under test (verify
/// refuses a unit whose binary does not exist); every other line unchanged.
fn unit_for_test() -> String {
    let unit = std::fs::read_to_string(repo_file("systemd/fabriq-target.service")).unwrap();
    let binary = env!("CARGO_BIN_EXE_fabriq-target");
    let exec_start = format!("ExecStart={INSTALLED_BINARY}");
    let starts = unit.lines().filter(|l| l.starts_with("ExecStart=")).count();
    assert_eq!(starts, 1, "the unit has one ExecStart=");
    let mut rewritten = String::with_capacity(unit.len() + binary.len());
    for line in unit.lines() {
        match line.strip_prefix(&exec_start) {
            Some(arguments) => rewritten.push_str(&format!("ExecStart={binary}{arguments}")),
            None => rewritten.push_str(line),
        }
        rewritten.push('\n');
    }
    assert!(
        rewritten.contains(&format!("ExecStart={binary} --config ")),
        "ExecStart= runs {INSTALLED_BINARY} --config ..."
    );
    rewritten
}

/// Runs `systemd-analyze verify` on `unit` saved as fabriq-target.service; returns
/// whether it exited 0 and everything it printed.
fn verify(unit: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabriq-target.service");
    std::fs::write(&path, unit).unwrap();
    let output =
        Command::new("systemd-analyze").arg("verify").arg(&path).env("SYSTEMD_LOG_COLOR", "0").output().unwrap_or_else(
            |error| {
                panic!(
                    "cannot run systemd-analyze ({error}): install Debian's `systemd` package \
                 (scripts/test does when run as root)"
                )
            },
        );
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

#[test]
fn unit_passes_systemd_analyze_verify_without_warnings() {
    let (success, printed) = verify(&unit_for_test());
    assert!(success, "systemd-analyze verify failed:\n{printed}");
    assert!(printed.trim().is_empty(), "systemd-analyze verify warned about the unit:\n{printed}");
}

/// verify exits 0 on an unknown key and only prints it: this is why the test above
/// reads the output, and this test shows it would catch one.
#[test]
fn verify_output_shows_an_unknown_key() {
    let unit = unit_for_test().replace("[Service]\n", "[Service]\nWatchdogSecs=10s\n");
    let (_, printed) = verify(&unit);
    assert!(
        printed.contains("Unknown key 'WatchdogSecs' in section [Service]"),
        "systemd-analyze verify printed:\n{printed}"
    );
}

#[test]
fn example_configuration_parses() {
    let path = repo_file("systemd/target.toml");
    let config = Config::load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.target.data_dir, Path::new("/var/lib/fabriq"));
    assert_eq!(config.listeners.len(), 2);
    assert!(config.listeners[1].discovery_only);
    assert_eq!(config.subsystems.len(), 1);
    assert_eq!(config.subsystems[0].namespaces.len(), 1);
}

/// The commented-out NVMe SSD namespace is valid too once uncommented (with the
/// device replaced by a file that exists, since verify runs without the SSD).
#[test]
fn example_ssd_namespace_parses_when_uncommented() {
    let text = std::fs::read_to_string(repo_file("systemd/target.toml")).unwrap();
    let device = tempfile::NamedTempFile::new().unwrap();
    let mut uncommented = String::new();
    for line in text.lines() {
        let line = match line.strip_prefix("  # ") {
            Some(rest) if rest.starts_with('[') || rest.contains(" = ") => format!("  {rest}"),
            Some(rest) if rest.starts_with("# ") => format!("  {rest}"),
            _ => line.to_owned(),
        };
        let line =
            if line.contains("/dev/disk/by-id/") { format!("  path = \"{}\"", device.path().display()) } else { line };
        uncommented.push_str(&line);
        uncommented.push('\n');
    }
    let config = Config::parse(&uncommented, "target.toml (uncommented)").unwrap_or_else(|error| panic!("{error}"));
    let namespaces = &config.subsystems[0].namespaces;
    assert_eq!(namespaces.len(), 2, "{uncommented}");
    assert_eq!(namespaces[1].nsid, 2);
    assert!(namespaces[1].uuid.is_some() && namespaces[1].nguid.is_some());
}

/// The daemon refuses a bad configuration: exit 78 (the unit's
/// RestartPreventExitStatus=) and the error on stderr.
#[test]
fn daemon_refuses_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[listener]]\naddress = \"127.0.0.1:4420\"\nbacklog = 5\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fabriq-target")).arg("--config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "fabriq-target: {}:3:1: field `listener[0].backlog`: unknown field `backlog`, expected one of \
             `transport`, `address`, `advertise`, `discovery_only`\n",
            path.display()
        )
    );
    let unit = std::fs::read_to_string(repo_file("systemd/fabriq-target.service")).unwrap();
    assert!(unit.lines().any(|l| l == "RestartPreventExitStatus=78"));
}

#[test]
fn check_config_prints_the_example_with_defaults() {
    let output = Command::new(env!("CARGO_BIN_EXE_fabriq-target"))
        .arg("--check-config")
        .arg("--config")
        .arg(repo_file("systemd/target.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).unwrap();
    let reparsed = Config::parse(&printed, "--check-config output").unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(reparsed, Config::load(&repo_file("systemd/target.toml")).unwrap());
}
