//! fabriq-bench's io_uring engine against a real fabriq-target: short randrw
//! runs with --verify over several queues and jobs, through in-capsule writes,
//! writes by R2T, digests and the C2HData SUCCESS flag. Correctness only:
//! no speed is asserted (speed is what fabriq-bench reports, not a test).

mod common;

use std::time::Duration;

use common::{NQN, Target};
use fabriq_bench::engine::run::{Device, Monitor, TcpEndpoint, TcpSpec, run};
use fabriq_bench::engine::setup::Endpoint;
use fabriq_bench::host::HostOptions;
use fabriq_bench::workload::{Pattern, Workload};

fn workload(bs: u32, iodepth: u32, queues: u32, jobs: u32) -> Workload {
    Workload {
        rw: Pattern::Randrw,
        read_pct: 50,
        bs,
        iodepth,
        queues,
        jobs,
        runtime: Some(Duration::from_millis(1500)),
        size: None,
        ramp: Duration::from_millis(200),
        rate_iops: None,
        offset: 0,
        // A small range, so that reads often hit blocks written in the run.
        range: 2 << 20,
        verify: true,
        assume_written: false,
        seed: 17,
        busy_poll: false,
    }
}

fn device(target: &Target, host: HostOptions) -> Device {
    Device::Tcp(TcpSpec {
        endpoint: TcpEndpoint::Direct(Endpoint { addr: target.addr, nqn: NQN.into() }),
        nsid: None,
        host,
        controllers: 1,
        kato: Duration::from_secs(10),
    })
}

fn check_run(target: &Target, host: HostOptions, w: Workload) {
    let monitor = Monitor { target_pid: Some(target.pid()), progress: false, disk: None };
    let outcome =
        run(&device(target, host), w, &monitor).unwrap_or_else(|e| panic!("run failed: {e}\n{}", target.log_text()));
    let stats = &outcome.stats;
    assert!(
        !stats.reads.is_empty() && !stats.writes.is_empty(),
        "reads {} writes {}",
        stats.reads.len(),
        stats.writes.len()
    );
    assert!(stats.verified_reads > 0, "no read was verified");
    assert!(outcome.target_cpu.is_some());
    assert_eq!(outcome.namespace.unwrap().lba_size, 512);
}

#[test]
fn randrw_verify_over_two_queues_in_capsule() {
    let target = Target::simple();
    check_run(&target, HostOptions::default(), workload(4096, 16, 2, 2));
}

#[test]
fn randrw_verify_by_r2t_with_digests_and_success_flag() {
    let target = Target::simple();
    let host =
        HostOptions { header_digest: true, data_digest: true, disable_sq_flow_control: true, ..HostOptions::default() };
    check_run(&target, host, workload(64 * 1024, 8, 2, 1));
}

#[test]
fn size_mode_writes_then_verifies_everything() {
    let target = Target::simple();
    let monitor = Monitor { target_pid: None, progress: false, disk: None };
    let mut w = workload(128 * 1024, 4, 2, 1);
    w.rw = Pattern::Write;
    w.read_pct = 0;
    w.runtime = None;
    w.ramp = Duration::ZERO;
    w.size = Some(2 << 20);
    let outcome = run(&device(&target, HostOptions::default()), w.clone(), &monitor).unwrap();
    assert_eq!(outcome.stats.writes.len(), 16);
    w.rw = Pattern::Read;
    w.read_pct = 100;
    w.assume_written = true;
    let outcome = run(&device(&target, HostOptions::default()), w.clone(), &monitor).unwrap();
    assert_eq!(outcome.stats.verified_reads, 16);
    // Another seed's pattern is not there: the run fails with a mismatch.
    w.seed = 18;
    let error = run(&device(&target, HostOptions::default()), w, &monitor).unwrap_err();
    assert!(error.to_string().contains("verify failed"), "{error}");
}
