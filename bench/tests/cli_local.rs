//! The `fabriq-bench` binary end to end in `local` mode on a temporary file:
//! a verify run, its JSON report and plots, a sweep and a comparison.
//! Correctness of the output only; no speed is asserted.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_fabriq-bench")).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "fabriq-bench {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn local_randrw_verify_with_json_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    let json = dir.path().join("out.json");
    let plots = dir.path().join("plots");
    // A temporary directory may live on tmpfs, which refuses O_DIRECT.
    let direct = if tmpfs(dir.path()) { "--buffered" } else { "--direct" };
    let out = bench(&[
        "local",
        "--file",
        path(&file),
        "--file-size",
        "8m",
        direct,
        "--rw",
        "randrw",
        "--bs",
        "4k",
        "--qd",
        "8",
        "--queues",
        "2",
        "--jobs",
        "2",
        "--runtime",
        "1s",
        "--verify",
        "--range",
        "1m",
        "--json",
        path(&json),
        "--plot",
        path(&plots),
        "--label",
        "test",
    ]);
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(summary.contains("IOPS") && summary.contains("no mismatch"), "{summary}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["results"]["ios"].as_u64().unwrap() > 0);
    assert!(report["results"]["verified_reads"].as_u64().unwrap() > 0);
    assert_eq!(report["mode"], "local");
    assert_eq!(report["label"], "test");
    assert_eq!(report["params"]["rw"], "randrw");
    assert!(!report["series"].as_array().unwrap().is_empty());
    for name in ["iops.svg", "latency.svg", "latency_cdf.svg"] {
        let svg = std::fs::read_to_string(plots.join(name)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{name}");
    }
}

#[test]
fn local_sweep_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    let plots = dir.path().join("plots");
    let mode = if tmpfs(dir.path()) { "--buffered" } else { "--direct" };
    let out = bench(&[
        "local",
        "--file",
        path(&file),
        "--file-size",
        "4m",
        mode,
        "--runtime",
        "300ms",
        "--sweep",
        "iodepth=1,4",
        "--plot",
        path(&plots),
        "--no-progress",
        // Any process stands for a target: this test's, which is alive throughout.
        "--target-pid",
        &std::process::id().to_string(),
    ]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().count(), 3, "{table}");
    // Each point has the target's CPU and IOPS per target CPU-second.
    let mut lines = table.lines();
    assert!(lines.next().unwrap().trim_end().ends_with("target %  IOPS/tgt CPU-s"), "{table}");
    for row in lines {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), 10, "{row}");
        assert!(cells[8].parse::<f64>().is_ok() && cells[9].replace(',', "").parse::<u64>().is_ok(), "{row}");
    }
    assert!(std::fs::read_to_string(plots.join("scaling.svg")).unwrap().starts_with("<svg"));
    let args = format!("local --file {} {mode} --runtime 300ms --qd 2", path(&file));
    let out = bench(&["compare", "--rounds", "2", "--a", &args, "--b", &args]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("B/A per round") && table.contains("IOPS"), "{table}");
}

#[test]
fn verify_mismatch_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    let mode = if tmpfs(dir.path()) { "--buffered" } else { "--direct" };
    bench(&[
        "local",
        "--file",
        path(&file),
        "--file-size",
        "1m",
        mode,
        "--rw",
        "write",
        "--size",
        "1m",
        "--bs",
        "64k",
        "--verify",
        "--seed",
        "3",
    ]);
    // Reads verified against the pattern of a seed: the one written passes, another fails.
    let read_verified = |seed: &str| {
        let read = ["local", "--file", path(&file), mode, "--rw", "read", "--runtime", "200ms"];
        let verify = ["--verify", "--assume-written", "--seed", seed];
        Command::new(env!("CARGO_BIN_EXE_fabriq-bench")).args(read).args(verify).output().unwrap()
    };
    let out = read_verified("3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = read_verified("4");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("verify failed"));
}

#[test]
fn disk_counters_of_the_files_device() {
    // The build's scratch directory is on the checkout's disk; a machine where even that is
    // on no block device (major number 0: tmpfs, overlay) gets the error checked instead.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("disk.img");
    let json = dir.path().join("out.json");
    // Writes for a whole second, so that the window's first sample precedes most of them.
    let mut args = vec!["local", "--file", path(&file), "--file-size", "8m", "--rw", "randwrite", "--bs", "64k"];
    // The file does not exist yet: its directory names the same device.
    args.extend(["--runtime", "1s", "--disk", path(dir.path()), "--json", path(&json), "--no-progress"]);
    let on_a_device = libc::major(std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(dir.path()).unwrap())) != 0;
    // Buffered writes only where the file system refuses O_DIRECT: they may not reach the
    // device within the window.
    let direct = !tmpfs(dir.path());
    args.push(if direct { "--direct" } else { "--buffered" });
    if !on_a_device {
        let out = Command::new(env!("CARGO_BIN_EXE_fabriq-bench")).args(&args).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no block device"));
        return;
    }
    let summary = String::from_utf8(bench(&args).stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let disk = &report["disk"];
    let name = disk["device"].as_str().unwrap();
    assert!(!name.is_empty() && summary.contains(&format!("disk {name}")), "{summary}");
    if direct {
        // A second of O_DIRECT writes reached the device (others may have written too).
        assert!(disk["writes_per_s"].as_f64().unwrap() > 0.0, "{disk}");
        assert!(disk["write_kib_per_request"].as_f64().unwrap() > 0.0, "{disk}");
        assert!(disk["kib_per_request"].as_f64().unwrap() > 0.0, "{disk}");
    }
    let busy = disk["busy_pct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&busy), "{disk}");
}

#[test]
fn disk_that_is_none_is_refused() {
    for (spec, why) in [("/proc/self", "no block device"), ("no-such-disk-here", "no such file")] {
        let args = ["local", "--file", "/dev/null", "--runtime", "1s", "--disk", spec];
        let out = Command::new(env!("CARGO_BIN_EXE_fabriq-bench")).args(args).output().unwrap();
        assert!(!out.status.success(), "{spec}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(spec) && stderr.contains(why), "{spec}: {stderr}");
    }
}

fn tmpfs(dir: &Path) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.join(".direct-probe"))
        .is_err()
}
