//! `bench/scenarios/trace-cycle.py`, the analysis behind `trace-cycle.sh`, on a recording
//! written by hand (`fixtures/trace-cycle.txt`) whose figures are worked out below: so that
//! what the bench's README quotes from it keeps meaning what it says. The fixture has a
//! completion whose issue came before the recording (not paired), an issue whose completion
//! perf dropped and whose sectors are read again later (not paired either: paired with the
//! later completion, it would hide the device's idle time), a line out of time order, a
//! request of another device and a ring of another process (both left out).

use std::path::Path;
use std::process::Command;

fn analyse(fixture: &str, device: &str) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("python3")
        .arg(root.join("scenarios/trace-cycle.py"))
        .arg(root.join("tests/fixtures").join(fixture))
        .arg(device)
        .output()
        .expect("python3 runs (scripts/test installs it)")
}

#[test]
fn a_hand_made_recording_gives_the_worked_out_figures() {
    let out = analyse("trace-cycle.txt", "254:0");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // Requests 128 KiB at 0 and 100 µs, done at 600 and 700; 2 MiB at 1000, done at 1500:
    // 3 in the 1500 µs from the first issue to the last completion, none for 300 µs, 1700 µs
    // of service in all. The 2 MiB request's sectors were also issued at 20 µs, with no
    // completion before they were issued again: that first issue lost its completion. The reactor got the three completions 40, 50 and 30 µs after the
    // block layer, and spent 200 of the recording's 1540 µs in one send of 1 MiB.
    let expected = "\
window 0.002 s
device 254:0: 2,000 requests/s, mean 768 KiB as issued
  service, issue to completion (us): p50 600  p90 600  p99 600
  no request at the driver: 20.0% of the time, 1 gaps (us): p50 300  p90 300  p99 300
  mean requests at the driver: 1.13
  left unpaired: 1 issues, 1 completions
backend operations: 1,948/s
  block completion to the reactor's completion (us): p50 40  p90 50  p99 50
sends: 649/s, mean 1,024.0 KiB
  submission to completion (us): p50 200  p90 200  p99 200; 13.0% of the window in sends
  sends of 1 MiB or more: 1, (us): p50 200  p90 200  p99 200
";
    assert_eq!(text, expected);
}

#[test]
fn a_device_with_no_request_and_a_bad_device_are_refused_clearly() {
    let out = analyse("trace-cycle.txt", "259:1");
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "trace-cycle: no request of device 259:1 in the trace\n");
    let out = analyse("trace-cycle.txt", "vda");
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "usage: trace-cycle.py PERF_SCRIPT_TEXT MAJOR:MINOR\n");
}
