//! The `fabriq-bench` command line: clap definitions and their conversion
//! into a [`Workload`] and a [`Device`].
//!
//! ```text
//! fabriq-bench run     (--target tcp://ADDR:PORT --nqn NQN | --discover tcp://ADDR:PORT [--nqn NQN])
//!                      [--nsid N] [--hostnqn NQN] [--hdr-digest] [--data-digest] [--controllers N]
//!                      [--kato DUR] [--disable-sqflow]  WORKLOAD  OUTPUT
//! fabriq-bench local   --file PATH [--file-size SIZE] [--buffered]  WORKLOAD  OUTPUT
//! fabriq-bench compare --rounds N --a "ARGS..." --b "ARGS..." [--json FILE]
//! fabriq-bench compare --scenario FILE.toml
//!
//! WORKLOAD: --rw read|write|randread|randwrite|randrw [--rwmixread PCT] --bs SIZE
//!           --iodepth N --queues N --jobs N (--runtime DUR | --size SIZE) [--ramp DUR]
//!           [--rate-iops N] [--offset SIZE] [--range SIZE] [--verify [--assume-written]]
//!           [--seed N] [--busy-poll] [--target-pid PID] [--disk DEV] [--sweep KEY=V1,V2,...]
//! OUTPUT:   [--json FILE] [--output-format human|json] [--plot DIR] [--label TEXT] [--no-progress]
//! ```
//!
//! Invariants: every conversion error names the option; nothing here opens
//! a socket or a file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::run::{Device, LocalSpec, Monitor, TcpEndpoint, TcpSpec};
use crate::engine::setup::{Endpoint, SetupError, parse_tcp_address};
use crate::host::HostOptions;
use crate::units::{parse_duration, parse_size};
use crate::workload::{Pattern, Workload};

/// An NVMe/TCP load generator that is never the bottleneck.
#[derive(Debug, Parser)]
#[command(
    name = "fabriq-bench",
    version,
    about = "An NVMe/TCP load generator that is never the bottleneck: io_uring, one thread per job"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive an NVMe/TCP target.
    Run(RunArgs),
    /// Drive a file or block device through io_uring: the backend's ceiling.
    Local(LocalArgs),
    /// Run two configurations A B A B ... and compare them round by round.
    Compare(CompareArgs),
}

/// `run`: an NVMe/TCP target.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub target: TargetArgs,
    /// What to run.
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Where the results go.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `local`: a file or block device.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// The file or block device.
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// Create the file, or extend it, to this size first (sparse: write it
    /// once before measuring reads).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub file_size: Option<u64>,
    /// Go through the page cache instead of O_DIRECT.
    #[arg(long, conflicts_with = "direct")]
    pub buffered: bool,
    /// O_DIRECT (the default; accepted for clarity).
    #[arg(long)]
    pub direct: bool,
    /// What to run.
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Where the results go.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where the target is and how to talk to it.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The NVMe/TCP listener, tcp://ADDR:PORT.
    #[arg(long, value_name = "URL", required_unless_present = "discover", conflicts_with = "discover")]
    pub target: Option<String>,
    /// A discovery service, tcp://ADDR:PORT: the subsystem is looked up in
    /// its log (by --nqn, or the only one).
    #[arg(long, value_name = "URL")]
    pub discover: Option<String>,
    /// Subsystem NQN.
    #[arg(long, value_name = "NQN", required_unless_present = "discover")]
    pub nqn: Option<String>,
    /// Namespace ID (default: the first active namespace).
    #[arg(long)]
    pub nsid: Option<u32>,
    /// Host NQN (default: a fresh UUID-based one).
    #[arg(long, value_name = "NQN")]
    pub hostnqn: Option<String>,
    /// Ask for PDU header digests.
    #[arg(long)]
    pub hdr_digest: bool,
    /// Ask for PDU data digests.
    #[arg(long)]
    pub data_digest: bool,
    /// Controllers (associations) to open, each with --queues I/O queues.
    #[arg(long, default_value_t = 1)]
    pub controllers: u32,
    /// Keep-alive timeout of the admin queues; Keep Alive goes out at half of
    /// it. 0 disables keep-alive.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub kato: Duration,
    /// Disable SQ flow control at Connect, so reads may complete with a
    /// C2HData SUCCESS flag and no CapsuleResp.
    #[arg(long)]
    pub disable_sqflow: bool,
}

/// The workload options shared by `run` and `local`.
#[derive(Debug, Args, Clone)]
pub struct WorkloadArgs {
    /// Access pattern.
    #[arg(long, value_enum, default_value_t = Pattern::Randread)]
    pub rw: Pattern,
    /// Percent of reads with --rw randrw.
    #[arg(long, default_value_t = 50)]
    pub rwmixread: u32,
    /// Bytes per command.
    #[arg(long, value_name = "SIZE", default_value = "4k", value_parser = parse_size)]
    pub bs: u64,
    /// Commands outstanding per queue.
    #[arg(long, visible_alias = "qd", default_value_t = 32)]
    pub iodepth: u32,
    /// I/O queues (per controller in `run`; in all in `local`).
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Threads, each with its own io_uring; queues are spread over them.
    #[arg(long, default_value_t = 1)]
    pub jobs: u32,
    /// Measured time after the ramp (default 10s unless --size is given).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub runtime: Option<Duration>,
    /// Bytes to transfer in all instead of a time.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "runtime")]
    pub size: Option<u64>,
    /// Time at the start excluded from the statistics.
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Commands per second in all (a token bucket per job).
    #[arg(long, value_name = "N")]
    pub rate_iops: Option<u64>,
    /// First byte of the range used.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub offset: u64,
    /// Bytes of the range used (default: to the end).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub range: Option<u64>,
    /// Writes carry a pattern naming their LBA and the seed; reads of blocks
    /// written in this run check it; a mismatch fails the run.
    #[arg(long)]
    pub verify: bool,
    /// With --verify: every block already holds the pattern of --seed (a
    /// read-only verify pass after a write run).
    #[arg(long, requires = "verify")]
    pub assume_written: bool,
    /// Seed of the random offsets and of the verify pattern.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Spin on the completion queue instead of sleeping in the kernel.
    #[arg(long)]
    pub busy_poll: bool,
    /// The target's process ID: its CPU time over the measured window is
    /// reported.
    #[arg(long, value_name = "PID")]
    pub target_pid: Option<u32>,
    /// A block device (`vda`, `/dev/vda`, or a file on it): what it served over
    /// the measured window is reported (requests, their size after merging,
    /// busy time).
    #[arg(long, value_name = "DEV")]
    pub disk: Option<String>,
    /// Run once per value and plot the scaling: iodepth, bs, queues, jobs,
    /// rwmixread or rate-iops, e.g. iodepth=1,4,16,32,128.
    #[arg(long, value_name = "KEY=V1,V2,...", value_parser = parse_sweep)]
    pub sweep: Option<Sweep>,
}

/// Output options.
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Write every figure, the parameters and the series as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// What goes to stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output_format: OutputFormat,
    /// Write SVG plots into this directory.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// A name for this configuration in reports.
    #[arg(long)]
    pub label: Option<String>,
    /// No progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

/// What goes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A summary for people.
    Human,
    /// The JSON report.
    Json,
}

/// `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Rounds of A then B (default: the scenario's `rounds`, else 5).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Arguments of configuration A: a `run ...` or `local ...` command line
    /// (without the program name; `run` may be left out).
    #[arg(long, value_name = "ARGS", required_unless_present = "scenario")]
    pub a: Option<String>,
    /// Arguments of configuration B.
    #[arg(long, value_name = "ARGS", required_unless_present = "scenario")]
    pub b: Option<String>,
    /// A TOML file naming A and B (`rounds`, `[a] args label`, `[b] args label`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["a", "b"])]
    pub scenario: Option<PathBuf>,
    /// Write every round's figures as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// A parameter swept over values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Which parameter.
    pub key: SweepKey,
    /// Its values, in order.
    pub values: Vec<u64>,
}

/// Parameters `--sweep` can vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepKey {
    /// `--iodepth`.
    Iodepth,
    /// `--bs` (sizes with suffixes).
    Bs,
    /// `--queues`.
    Queues,
    /// `--jobs`.
    Jobs,
    /// `--rwmixread`.
    Rwmixread,
    /// `--rate-iops`.
    RateIops,
}

impl SweepKey {
    /// Its option name.
    pub fn name(self) -> &'static str {
        match self {
            SweepKey::Iodepth => "iodepth",
            SweepKey::Bs => "bs",
            SweepKey::Queues => "queues",
            SweepKey::Jobs => "jobs",
            SweepKey::Rwmixread => "rwmixread",
            SweepKey::RateIops => "rate-iops",
        }
    }

    /// Sets this parameter of `workload` to `value`.
    pub fn apply(self, workload: &mut Workload, value: u64) {
        let small = u32::try_from(value).unwrap_or(u32::MAX);
        match self {
            SweepKey::Iodepth => workload.iodepth = small,
            SweepKey::Bs => workload.bs = small,
            SweepKey::Queues => workload.queues = small,
            SweepKey::Jobs => workload.jobs = small,
            SweepKey::Rwmixread => workload.read_pct = small,
            SweepKey::RateIops => workload.rate_iops = Some(value),
        }
    }
}

/// Parses `KEY=V1,V2,...`.
pub fn parse_sweep(text: &str) -> Result<Sweep, String> {
    let (key, values) = text.split_once('=').ok_or("expected KEY=V1,V2,...")?;
    let key = match key.trim() {
        "iodepth" | "qd" => SweepKey::Iodepth,
        "bs" => SweepKey::Bs,
        "queues" => SweepKey::Queues,
        "jobs" => SweepKey::Jobs,
        "rwmixread" => SweepKey::Rwmixread,
        "rate-iops" | "rate_iops" => SweepKey::RateIops,
        other => return Err(format!("cannot sweep `{other}` (iodepth, bs, queues, jobs, rwmixread, rate-iops)")),
    };
    let values =
        values.split(',').map(|v| parse_size(v).map_err(|e| e.to_string())).collect::<Result<Vec<u64>, String>>()?;
    if values.is_empty() || values.contains(&0) && key != SweepKey::Rwmixread {
        return Err("sweep values must be at least 1".into());
    }
    Ok(Sweep { key, values })
}

/// Why the options do not make a run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A size over 32 bits where one is needed.
    #[error("--bs {0} is too large")]
    BsTooLarge(u64),
    /// A bad address.
    #[error(transparent)]
    Address(#[from] SetupError),
}

impl WorkloadArgs {
    /// The workload these options describe (checked later, against the device).
    pub fn to_workload(&self) -> Result<Workload, CliError> {
        let read_pct = match self.rw {
            Pattern::Read | Pattern::Randread => 100,
            Pattern::Write | Pattern::Randwrite => 0,
            Pattern::Randrw => self.rwmixread,
        };
        let bs = u32::try_from(self.bs).map_err(|_| CliError::BsTooLarge(self.bs))?;
        let runtime = match (self.runtime, self.size) {
            (Some(r), _) => Some(r),
            (None, None) => Some(Duration::from_secs(10)),
            (None, Some(_)) => None,
        };
        Ok(Workload {
            rw: self.rw,
            read_pct,
            bs,
            iodepth: self.iodepth,
            queues: self.queues,
            jobs: self.jobs,
            runtime,
            size: self.size,
            ramp: self.ramp,
            rate_iops: self.rate_iops,
            offset: self.offset,
            range: self.range.unwrap_or(0),
            verify: self.verify,
            assume_written: self.assume_written,
            seed: self.seed,
            busy_poll: self.busy_poll,
        })
    }

    /// What the main thread watches; `--disk` is resolved by the caller (it reads /sys).
    pub fn monitor(&self, output: &OutputArgs) -> Monitor {
        Monitor { target_pid: self.target_pid, progress: !output.no_progress, disk: None }
    }
}

impl TargetArgs {
    /// The device these options describe.
    pub fn to_device(&self) -> Result<Device, CliError> {
        let mut host = HostOptions {
            header_digest: self.hdr_digest,
            data_digest: self.data_digest,
            disable_sq_flow_control: self.disable_sqflow,
            ..HostOptions::default()
        };
        if let Some(hostnqn) = &self.hostnqn {
            host.hostnqn = hostnqn.clone();
        }
        let endpoint = match (&self.target, &self.discover) {
            (Some(target), _) => TcpEndpoint::Direct(Endpoint {
                addr: parse_tcp_address(target)?,
                nqn: self.nqn.clone().unwrap_or_default(),
            }),
            (None, Some(discover)) => {
                TcpEndpoint::Discover { addr: parse_tcp_address(discover)?, nqn: self.nqn.clone() }
            }
            (None, None) => unreachable!("clap requires --target or --discover"),
        };
        Ok(Device::Tcp(TcpSpec { endpoint, nsid: self.nsid, host, controllers: self.controllers, kato: self.kato }))
    }
}

impl LocalArgs {
    /// The device these options describe.
    pub fn to_device(&self) -> Device {
        Device::Local(LocalSpec { path: self.file.clone(), file_size: self.file_size, direct: !self.buffered })
    }
}

/// Splits a command line the way a shell would for simple cases: words
/// separated by blanks, with '...' and "..." quoting (no escapes inside
/// single quotes, backslash escapes elsewhere).
pub fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.push(chars.next().ok_or("trailing \\")?),
                        Some(c) => word.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or("trailing \\")?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Cli {
        let mut argv = vec!["fabriq-bench".to_string()];
        argv.extend(split_args(args).unwrap());
        Cli::try_parse_from(argv).unwrap()
    }

    #[test]
    fn run_options_make_a_workload() {
        let cli = parse(
            "run --target tcp://127.0.0.1:4420 --nqn nqn.2026-11.dev.fabriq:x --rw randrw --rwmixread 70 \
             --bs 16k --qd 8 --queues 2 --jobs 2 --runtime 2s --ramp 500ms --rate-iops 1000 --verify --seed 9",
        );
        let Command::Run(run) = cli.command else { panic!("not run") };
        let w = run.workload.to_workload().unwrap();
        assert_eq!(w.rw, Pattern::Randrw);
        assert_eq!(w.read_pct, 70);
        assert_eq!(w.bs, 16384);
        assert_eq!((w.iodepth, w.queues, w.jobs), (8, 2, 2));
        assert_eq!(w.runtime, Some(Duration::from_secs(2)));
        assert_eq!(w.ramp, Duration::from_millis(500));
        assert_eq!(w.rate_iops, Some(1000));
        assert!(w.verify);
        assert_eq!(w.seed, 9);
        assert_eq!(w.check(), Ok(()));
        let Device::Tcp(spec) = run.target.to_device().unwrap() else { panic!("not tcp") };
        assert_eq!(spec.controllers, 1);
        assert_eq!(spec.kato, Duration::from_secs(30));
        let TcpEndpoint::Direct(e) = spec.endpoint else { panic!("not direct") };
        assert_eq!(e.addr, "127.0.0.1:4420".parse().unwrap());
    }

    #[test]
    fn defaults_and_size_mode() {
        let cli = parse("local --file /tmp/x --size 1g --rw write");
        let Command::Local(local) = cli.command else { panic!("not local") };
        let w = local.workload.to_workload().unwrap();
        assert_eq!(w.runtime, None);
        assert_eq!(w.size, Some(1 << 30));
        assert_eq!(w.read_pct, 0);
        assert_eq!((w.bs, w.iodepth), (4096, 32));
        let Device::Local(spec) = local.to_device() else { panic!("not local") };
        assert!(spec.direct);
        let w = parse("local --file /tmp/x").command;
        let Command::Local(local) = w else { panic!() };
        assert_eq!(local.workload.to_workload().unwrap().runtime, Some(Duration::from_secs(10)));
    }

    #[test]
    fn conflicting_or_missing_options_are_refused() {
        let bad = |args: &str| {
            let mut argv = vec!["fabriq-bench".to_string()];
            argv.extend(split_args(args).unwrap());
            Cli::try_parse_from(argv).is_err()
        };
        assert!(bad("run --nqn x"));
        assert!(bad("run --target tcp://127.0.0.1:1"));
        assert!(bad("local --file f --runtime 1s --size 1m"));
        assert!(bad("local --file f --buffered --direct"));
        assert!(bad("local --file f --assume-written"));
        assert!(bad("local --file f --bs 4q"));
        assert!(!bad("run --discover tcp://127.0.0.1:8009"));
    }

    #[test]
    fn sweeps() {
        assert_eq!(parse_sweep("iodepth=1,4,16"), Ok(Sweep { key: SweepKey::Iodepth, values: vec![1, 4, 16] }));
        assert_eq!(parse_sweep("bs=4k,128k").unwrap().values, vec![4096, 131072]);
        assert!(parse_sweep("colour=1").is_err());
        assert!(parse_sweep("iodepth").is_err());
        assert!(parse_sweep("iodepth=0").is_err());
        let mut w = parse("local --file f").command;
        let Command::Local(ref mut l) = w else { panic!() };
        let mut workload = l.workload.to_workload().unwrap();
        SweepKey::Iodepth.apply(&mut workload, 128);
        assert_eq!(workload.iodepth, 128);
    }

    #[test]
    fn shell_like_splitting() {
        assert_eq!(
            split_args(r#"run --label "fabriq one" --nqn 'a b' x\ y"#).unwrap(),
            ["run", "--label", "fabriq one", "--nqn", "a b", "x y"]
        );
        assert_eq!(split_args("  ").unwrap(), Vec::<String>::new());
        assert!(split_args("'open").is_err());
    }
}
