//! `fabriq-bench`: runs a workload against an NVMe/TCP target (`run`) or a
//! local file (`local`), or compares two configurations (`compare`); prints
//! the summary or the JSON report, writes plots. Exit status 0 when the run
//! completed with no error and no verify mismatch, 1 otherwise.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fabriq_bench::cli::{Cli, Command, OutputArgs, OutputFormat, WorkloadArgs};
use fabriq_bench::compare::{self, Scenario};
use fabriq_bench::disk::Disk;
use fabriq_bench::engine::run::{Device, run};
use fabriq_bench::plot::{self, ScalingPoint};
use fabriq_bench::report::Report;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => args
            .target
            .to_device()
            .map_err(anyhow::Error::from)
            .and_then(|device| bench(&device, &args.workload, &args.output)),
        Command::Local(args) => bench(&args.to_device(), &args.workload, &args.output),
        Command::Compare(args) => compare_cmd(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fabriq-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(device: &Device, workload_args: &WorkloadArgs, output: &OutputArgs) -> anyhow::Result<()> {
    let workload = workload_args.to_workload()?;
    let mut monitor = workload_args.monitor(output);
    monitor.disk = workload_args.disk.as_deref().map(Disk::resolve).transpose()?;
    if let Some(sweep) = &workload_args.sweep {
        let reports = compare::sweep(device, &workload, sweep, &monitor, output.label.as_deref())?;
        let json = serde_json::json!({ "sweep": sweep.key.name(), "points": reports.iter().map(|(v, r)| serde_json::json!({"value": v, "report": r})).collect::<Vec<_>>() });
        if output.output_format == OutputFormat::Json {
            println!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            print!("{}", compare::sweep_table(sweep.key.name(), &reports));
        }
        if let Some(path) = &output.json {
            std::fs::write(path, serde_json::to_string_pretty(&json)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(dir) = &output.plot {
            let points: Vec<ScalingPoint> = reports
                .iter()
                .map(|(value, r)| ScalingPoint { value: *value, iops: r.results.iops, p99_us: r.results.lat.p99_us })
                .collect();
            let path = plot::plot_scaling(&points, sweep.key.name(), output.label.as_deref(), dir)?;
            eprintln!("plot: {}", path.display());
        }
        return Ok(());
    }
    let outcome = run(device, workload, &monitor)?;
    let report = Report::new(&outcome, output.label.clone());
    match output.output_format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Human => print!("{}", report.summary()),
    }
    if let Some(path) = &output.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &output.plot {
        for path in plot::plot_run(&report, dir)? {
            eprintln!("plot: {}", path.display());
        }
    }
    Ok(())
}

fn compare_cmd(args: &fabriq_bench::cli::CompareArgs) -> anyhow::Result<()> {
    let scenario = match (&args.scenario, &args.a, &args.b) {
        (Some(path), _, _) => Scenario::load(path, args.rounds)?,
        (None, Some(a), Some(b)) => Scenario::from_args(args.rounds.unwrap_or(compare::DEFAULT_ROUNDS), a, b)?,
        _ => anyhow::bail!("give --a and --b, or --scenario"),
    };
    let exe = std::env::current_exe().context("finding this program's path")?;
    let comparison = compare::compare(&scenario, &exe, &mut std::io::stderr())?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", comparison.table())?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&comparison)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
