//! One run from start to end: set the queues up (controllers over NVMe/TCP, or
//! a file), spread them over job threads, watch from the main thread
//! (progress line, Keep Alive, CPU samples at the edges of the measured
//! window), then merge what the jobs measured.
//!
//! Invariants: the main thread never touches a job's queues once the job
//! started; jobs share only the stop flag, their progress counters and the
//! verify map (atomics, no locks); a failed job stops the others, and the
//! first error is the run's.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::local::{LOCAL_BLOCK, LocalQueue};
use super::setup::{Controller, Endpoint, NamespaceInfo, SetupError, discover};
use super::tcp::{self, TcpQueue};
use super::{Clock, Driver, EngineError, JobPlan, JobResult, Progress, Ring, run_job};
use crate::cpu::{self, CpuError};
use crate::disk::{Counters, Disk, DiskError, DiskUse};
use crate::host::HostOptions;
use crate::stats::Stats;
use crate::workload::{Generator, VerifyMap, Workload, WorkloadError};

/// Where the commands go.
#[derive(Debug, Clone)]
pub enum Device {
    /// NVMe/TCP controllers.
    Tcp(TcpSpec),
    /// A file or block device.
    Local(LocalSpec),
}

/// An NVMe/TCP target.
#[derive(Debug, Clone)]
pub struct TcpSpec {
    /// The subsystem's listener and NQN, or a discovery service to ask.
    pub endpoint: TcpEndpoint,
    /// Namespace (default: the first active one).
    pub nsid: Option<u32>,
    /// Host identity and digests.
    pub host: HostOptions,
    /// Controllers (associations) to open, each with `--queues` I/O queues.
    pub controllers: u32,
    /// KATO of the admin queues (0: none).
    pub kato: Duration,
}

/// How the target is found.
#[derive(Debug, Clone)]
pub enum TcpEndpoint {
    /// Given outright.
    Direct(Endpoint),
    /// From a discovery log, by NQN (or the only subsystem).
    Discover {
        /// The discovery service.
        addr: std::net::SocketAddr,
        /// The subsystem wanted.
        nqn: Option<String>,
    },
}

/// A file or block device.
#[derive(Debug, Clone)]
pub struct LocalSpec {
    /// Its path.
    pub path: PathBuf,
    /// Create or extend a file to this size first.
    pub file_size: Option<u64>,
    /// Open with O_DIRECT.
    pub direct: bool,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Queues could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The workload does not fit the device.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// A job failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The local file could not be opened or sized.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `--target-pid` could not be read.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// `--disk`'s counters could not be read.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A job thread panicked.
    #[error("job {0} panicked")]
    Panicked(usize),
}

/// What the main thread watches for.
#[derive(Debug, Clone, Default)]
pub struct Monitor {
    /// The target's process, for its CPU time.
    pub target_pid: Option<u32>,
    /// Print a progress line on stderr (when it is a terminal).
    pub progress: bool,
    /// The block device whose counters are sampled with the CPU times.
    pub disk: Option<Disk>,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The workload, with its range filled in.
    pub workload: Workload,
    /// What was driven: `tcp://ADDR NQN` or the file path.
    pub device: String,
    /// The namespace (NVMe/TCP only).
    pub namespace: Option<NamespaceInfo>,
    /// Local mode: whether buffers were registered with io_uring.
    pub registered_buffers: Option<bool>,
    /// Everything measured, all jobs merged.
    pub stats: Stats,
    /// The measured window, as the jobs saw it (the longest of theirs).
    pub window: Duration,
    /// The window over which the main thread sampled CPU times.
    pub cpu_window: Duration,
    /// The bench process's CPU time in the window.
    pub bench_cpu: Duration,
    /// The target's CPU time in the window.
    pub target_cpu: Option<Duration>,
    /// What `--disk` served in the window.
    pub disk: Option<DiskUse>,
    /// Each job thread's CPU time and window.
    pub jobs: Vec<(Duration, Duration)>,
}

/// Runs `workload` against `device`.
pub fn run(device: &Device, mut workload: Workload, monitor: &Monitor) -> Result<Outcome, RunError> {
    workload.check()?;
    match device {
        Device::Tcp(spec) => run_tcp(spec, workload, monitor),
        Device::Local(spec) => {
            let (file, size) = open_local(spec)?;
            workload.fit(size, LOCAL_BLOCK)?;
            run_local(spec, Arc::new(file), workload, monitor)
        }
    }
}

fn run_tcp(spec: &TcpSpec, mut workload: Workload, monitor: &Monitor) -> Result<Outcome, RunError> {
    let endpoint = match &spec.endpoint {
        TcpEndpoint::Direct(endpoint) => endpoint.clone(),
        TcpEndpoint::Discover { addr, nqn } => discover(*addr, nqn.as_deref(), &spec.host)?,
    };
    let mut controllers = Vec::new();
    for _ in 0..spec.controllers.max(1) {
        controllers.push(Controller::connect(&endpoint, &spec.host, spec.nsid, workload.queues, spec.kato)?);
    }
    let info = controllers[0].info;
    workload.fit(info.size_bytes, info.lba_size)?;
    if let Some(max) = info.mdts_bytes
        && u64::from(workload.bs) > max
    {
        return Err(WorkloadError::BsOverMdts { bs: workload.bs, max }.into());
    }
    if workload.iodepth > info.max_queue_entries {
        return Err(WorkloadError::DepthOverMqes { qd: workload.iodepth, max: info.max_queue_entries }.into());
    }
    let total = workload.queues * spec.controllers.max(1);
    let jobs = workload.jobs.min(total) as usize;
    let mut per_job: Vec<Vec<TcpQueue>> = (0..jobs).map(|_| Vec::new()).collect();
    let target = tcp::Target { nsid: info.nsid, lba_size: info.lba_size };
    for (c, controller) in controllers.iter().enumerate() {
        for q in 0..workload.queues {
            let global = c as u32 * workload.queues + q;
            let parts = controller.open_io_queue((q + 1) as u16, workload.iodepth)?;
            let job = global as usize % jobs;
            let index = per_job[job].len() as u32;
            let generator = Generator::new(&workload, global, total);
            per_job[job].push(TcpQueue::new(index, parts, target, &workload, generator));
        }
    }
    let verify = workload
        .verify
        .then(|| Arc::new(VerifyMap::new(workload.units(), workload.assume_written, workload.seed, info.lba_size)));
    let device = format!("tcp://{} {} nsid {}", endpoint.addr, endpoint.nqn, info.nsid);
    let result = drive(per_job, &workload, verify, monitor, &mut controllers, |queues| {
        let entries = 2 * queues.len() as u32 + 8;
        Ring::new(entries).map(|ring| (ring, None))
    });
    for controller in controllers {
        controller.shutdown();
    }
    let mut outcome = result?;
    outcome.device = device;
    outcome.namespace = Some(info);
    outcome.workload = workload;
    Ok(outcome)
}

fn open_local(spec: &LocalSpec) -> Result<(File, u64), RunError> {
    let err = |error| RunError::File { path: spec.path.clone(), error };
    if let Some(size) = spec.file_size {
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(&spec.path).map_err(err)?;
        if file.metadata().map_err(err)?.len() < size {
            file.set_len(size).map_err(err)?;
        }
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if spec.direct {
        options.custom_flags(libc::O_DIRECT);
    }
    let mut file = options.open(&spec.path).map_err(err)?;
    // Works for block devices too, where the metadata length is 0.
    let size = file.seek(SeekFrom::End(0)).map_err(err)?;
    Ok((file, size))
}

fn run_local(spec: &LocalSpec, file: Arc<File>, workload: Workload, monitor: &Monitor) -> Result<Outcome, RunError> {
    let total = workload.queues;
    let jobs = workload.jobs.min(total) as usize;
    let mut per_job: Vec<Vec<LocalQueue>> = (0..jobs).map(|_| Vec::new()).collect();
    for q in 0..total {
        let job = q as usize % jobs;
        let index = per_job[job].len() as u32;
        let generator = Generator::new(&workload, q, total);
        per_job[job].push(LocalQueue::new(index, Arc::clone(&file), &workload, generator));
    }
    let verify = workload
        .verify
        .then(|| Arc::new(VerifyMap::new(workload.units(), workload.assume_written, workload.seed, LOCAL_BLOCK)));
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*file);
    let mut outcome = drive(per_job, &workload, verify, monitor, &mut [], |queues| {
        let entries: u32 = queues.len() as u32 * workload.iodepth + 8;
        let ring = Ring::new(entries)?;
        if ring.inner().submitter().register_files(&[fd]).is_ok() {
            for q in queues.iter_mut() {
                q.use_fixed_file(0);
            }
        }
        let iovecs: Vec<libc::iovec> = queues.iter().flat_map(|q| q.buffers()).collect();
        // SAFETY: the iovecs describe the queues' chunks, which live until
        // after the ring is dropped (run_job drains the ring, then drops the
        // queues and the ring together; the ring's registration goes with it).
        let registered = iovecs.len() <= usize::from(u16::MAX)
            && unsafe { ring.inner().submitter().register_buffers(&iovecs) }.is_ok();
        if registered {
            let mut base = 0u16;
            for q in queues.iter_mut() {
                q.use_registered(base);
                base += q.buffers().len() as u16;
            }
        }
        Ok((ring, Some(registered)))
    })?;
    outcome.device = format!("{}{}", spec.path.display(), if spec.direct { " (O_DIRECT)" } else { " (buffered)" });
    outcome.workload = workload;
    Ok(outcome)
}

/// Starts one thread per job, watches them, merges their results.
fn drive<D, F>(
    per_job: Vec<Vec<D>>,
    workload: &Workload,
    verify: Option<Arc<VerifyMap>>,
    monitor: &Monitor,
    controllers: &mut [Controller],
    make_ring: F,
) -> Result<Outcome, RunError>
where
    D: Driver + Send,
    F: Fn(&mut Vec<D>) -> Result<(Ring, Option<bool>), EngineError> + Sync,
{
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<Progress>> = per_job.iter().map(|_| Arc::new(Progress::default())).collect();
    let total_queues: usize = per_job.iter().map(Vec::len).sum();
    let start = Instant::now();
    let measure_from = start + workload.ramp;
    let clock = Clock { measure_from, end: workload.runtime.map(|r| measure_from + r) };
    let seconds = workload.runtime.map_or(60, |r| r.as_secs() as usize + 1);
    let plans: Vec<JobPlan> = per_job
        .iter()
        .zip(&progress)
        .map(|(queues, progress)| {
            let rate = workload.rate_iops.map(|r| (r * queues.len() as u64 / total_queues as u64).max(1));
            JobPlan {
                clock,
                rate_iops: rate,
                burst: rate.map_or(1, |r| (r / 1000).clamp(1, u64::from(workload.iodepth))),
                verify: verify.clone(),
                progress: Arc::clone(progress),
                stop: Arc::clone(&stop),
                busy_poll: workload.busy_poll,
                seconds,
            }
        })
        .collect();
    let show_progress = monitor.progress
        && std::io::stderr().is_terminal()
        && workload.runtime.is_none_or(|r| r + workload.ramp > Duration::from_secs(3));
    let (results, registered, watched) = thread::scope(|scope| {
        let handles: Vec<_> = per_job
            .into_iter()
            .zip(&plans)
            .enumerate()
            .map(|(i, (mut queues, plan))| {
                let make_ring = &make_ring;
                thread::Builder::new()
                    .name(format!("fabriq-bench-job{i}"))
                    .spawn_scoped(scope, move || {
                        let (ring, registered) = match make_ring(&mut queues) {
                            Ok(r) => r,
                            Err(e) => {
                                plan.stop.store(true, Ordering::Release);
                                plan.progress.done.store(true, Ordering::Release);
                                return (Err(e), None);
                            }
                        };
                        (run_job(queues, ring, plan), registered)
                    })
                    .expect("spawning a job thread")
            })
            .collect();
        let watched = watch(&progress, clock, monitor, controllers, &stop, show_progress);
        let mut results = Vec::new();
        let mut registered = None;
        for (i, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok((result, reg)) => {
                    registered = registered.or(reg);
                    results.push(result.map_err(RunError::from));
                }
                Err(_) => results.push(Err(RunError::Panicked(i))),
            }
        }
        (results, registered, watched)
    });
    let watched = watched?;
    let mut jobs: Vec<JobResult> = Vec::new();
    for result in results {
        jobs.push(result?);
    }
    let mut stats = Stats::new(seconds);
    for job in &jobs {
        stats.merge(&job.stats);
    }
    Ok(Outcome {
        workload: workload.clone(),
        device: String::new(),
        namespace: None,
        registered_buffers: registered,
        stats,
        window: jobs.iter().map(|j| j.window).max().unwrap_or(watched.window),
        cpu_window: watched.window,
        bench_cpu: watched.bench_cpu,
        target_cpu: watched.target_cpu,
        disk: watched.disk,
        jobs: jobs.iter().map(|j| (j.cpu, j.window)).collect(),
    })
}

struct Watched {
    window: Duration,
    bench_cpu: Duration,
    target_cpu: Option<Duration>,
    disk: Option<DiskUse>,
}

/// A sample at an edge of the window: when, this process's CPU, the target's, the disk's.
type Sample = (Instant, Duration, Option<Duration>, Option<Counters>);

/// The main thread during a run: samples CPU at the window's edges, sends
/// Keep Alive, prints progress, until every job is done.
fn watch(
    progress: &[Arc<Progress>],
    clock: Clock,
    monitor: &Monitor,
    controllers: &mut [Controller],
    stop: &AtomicBool,
    show_progress: bool,
) -> Result<Watched, RunError> {
    let sample = |pid: Option<u32>| -> Result<Sample, RunError> {
        let target = pid.map(cpu::process_cpu).transpose()?;
        let disk = monitor.disk.as_ref().map(Disk::sample).transpose()?;
        Ok((Instant::now(), cpu::self_cpu(), target, disk))
    };
    let mut from = None;
    let mut to = None;
    let mut last_print = Instant::now();
    let mut last_ios = 0u64;
    let mut last_bytes = 0u64;
    let mut error = None;
    let all_done = || progress.iter().all(|p| p.done.load(Ordering::Acquire));
    while !all_done() {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(100);
        if from.is_none() {
            wake = wake.min(clock.measure_from);
        }
        if let (None, Some(end)) = (to, clock.end) {
            wake = wake.min(end);
        }
        thread::sleep(wake.saturating_duration_since(now));
        let now = Instant::now();
        if from.is_none() && now >= clock.measure_from {
            from = Some(sample(monitor.target_pid)?);
        }
        if to.is_none() && clock.end.is_some_and(|end| now >= end) {
            to = Some(sample(monitor.target_pid)?);
        }
        for controller in controllers.iter_mut() {
            if let Err(e) = controller.keep_alive_if_due(now) {
                error.get_or_insert(e);
                stop.store(true, Ordering::Release);
            }
        }
        if show_progress && now.duration_since(last_print) >= Duration::from_secs(1) {
            let ios: u64 = progress.iter().map(|p| p.ios.load(Ordering::Relaxed)).sum();
            let bytes: u64 = progress.iter().map(|p| p.bytes.load(Ordering::Relaxed)).sum();
            let secs = now.duration_since(last_print).as_secs_f64();
            let elapsed = now.saturating_duration_since(clock.measure_from).as_secs();
            let phase = if now < clock.measure_from { "ramp" } else { "run " };
            let total =
                clock.end.map_or(String::from("?"), |e| e.duration_since(clock.measure_from).as_secs().to_string());
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[K{phase} {elapsed:>4}/{total} s  {:>10.1}k IOPS  {:>9.1} MB/s",
                (ios - last_ios) as f64 / secs / 1000.0,
                (bytes - last_bytes) as f64 / secs / 1e6
            );
            let _ = err.flush();
            last_print = now;
            last_ios = ios;
            last_bytes = bytes;
        }
    }
    if show_progress {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
    if let Some(e) = error {
        return Err(e.into());
    }
    let from = match from {
        Some(f) => f,
        None => sample(monitor.target_pid)?,
    };
    let to = match to {
        Some(t) => t,
        None => sample(monitor.target_pid)?,
    };
    Ok(Watched {
        window: to.0.saturating_duration_since(from.0),
        bench_cpu: to.1.saturating_sub(from.1),
        target_cpu: match (from.2, to.2) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        disk: match (&monitor.disk, from.3, to.3) {
            (Some(disk), Some(a), Some(b)) => {
                Some(DiskUse::between(&disk.name, &a, &b, to.0.saturating_duration_since(from.0).as_secs_f64()))
            }
            _ => None,
        },
    })
}
