//! Speed on a noisy machine: `compare` runs two configurations A B A B ... as
//! child processes of this same binary (same workload, two targets or two
//! settings), and reports each figure's min / median / max for A and B and
//! the ratio B/A round by round with its median; `--sweep` runs one workload
//! over a list of values of one parameter and tabulates the scaling.
//!
//! Invariants: A and B alternate, so slow drifts of the machine hit both
//! alike; a round whose child fails stops the comparison with its error
//! (a missing point would bias the medians); ratios are always B/A.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::cli::{Sweep, split_args};
use crate::engine::run::{Device, Monitor, RunError, run};
use crate::report::{Report, thousands};
use crate::workload::Workload;

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The scenario file could not be read or parsed.
    #[error("scenario {path}: {message}")]
    Scenario {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// An argument string does not split.
    #[error("arguments of {side}: {message}")]
    Args {
        /// A or B.
        side: String,
        /// Why.
        message: String,
    },
    /// A child run could not start or failed.
    #[error("round {round}, {side}: {message}")]
    Child {
        /// The round, from 1.
        round: u32,
        /// A or B.
        side: String,
        /// What happened.
        message: String,
    },
}

/// Rounds when neither the command line nor the scenario says.
pub const DEFAULT_ROUNDS: u32 = 5;

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// Its name in the table.
    pub label: String,
    /// Its command line (subcommand first).
    pub args: Vec<String>,
}

/// A and B, and how many rounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Rounds of A then B.
    pub rounds: u32,
    /// The baseline.
    pub a: Side,
    /// The candidate.
    pub b: Side,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    rounds: Option<u32>,
    a: SideFile,
    b: SideFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SideFile {
    args: String,
    label: Option<String>,
}

fn side(name: &str, label: Option<String>, args: &str) -> Result<Side, CompareError> {
    let mut args = split_args(args).map_err(|message| CompareError::Args { side: name.into(), message })?;
    if !matches!(args.first().map(String::as_str), Some("run" | "local")) {
        args.insert(0, "run".into());
    }
    Ok(Side { label: label.unwrap_or_else(|| name.to_string()), args })
}

impl Scenario {
    /// From `--rounds`, `--a` and `--b`.
    pub fn from_args(rounds: u32, a: &str, b: &str) -> Result<Scenario, CompareError> {
        Ok(Scenario { rounds: rounds.max(1), a: side("A", None, a)?, b: side("B", None, b)? })
    }

    /// From a TOML scenario file; `rounds` overrides the file's.
    pub fn load(path: &Path, rounds: Option<u32>) -> Result<Scenario, CompareError> {
        let err = |message: String| CompareError::Scenario { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut scenario = Scenario::parse(&text, DEFAULT_ROUNDS).map_err(|e| match e {
            CompareError::Scenario { message, .. } => err(message),
            other => other,
        })?;
        if let Some(rounds) = rounds {
            scenario.rounds = rounds.max(1);
        }
        Ok(scenario)
    }

    /// From the text of a TOML scenario.
    pub fn parse(text: &str, default_rounds: u32) -> Result<Scenario, CompareError> {
        let file: ScenarioFile =
            toml::from_str(text).map_err(|e| CompareError::Scenario { path: String::new(), message: e.to_string() })?;
        Ok(Scenario {
            rounds: file.rounds.unwrap_or(default_rounds).max(1),
            a: side("A", file.a.label, &file.a.args)?,
            b: side("B", file.b.label, &file.b.args)?,
        })
    }
}

/// The figures compared, in table order.
pub const FIGURES: &[&str] = &[
    "IOPS",
    "MB/s",
    "lat avg µs",
    "lat p50 µs",
    "lat p99 µs",
    "lat p99.9 µs",
    "IOPS/target CPU-s",
    "disk KiB/request",
    "disk busy %",
];

/// How many figures a run gives.
pub const FIGURE_COUNT: usize = FIGURES.len();

/// One run's figures, in the order of [`FIGURES`] (`NaN` when absent).
pub fn figures(report: &serde_json::Value) -> [f64; FIGURE_COUNT] {
    let get = |path: &[&str]| {
        let mut v = report;
        for key in path {
            v = &v[*key];
        }
        v.as_f64().unwrap_or(f64::NAN)
    };
    [
        get(&["results", "iops"]),
        get(&["results", "mb_per_s"]),
        get(&["results", "lat", "mean_us"]),
        get(&["results", "lat", "p50_us"]),
        get(&["results", "lat", "p99_us"]),
        get(&["results", "lat", "p999_us"]),
        get(&["cpu", "target", "iops_per_cpu_s"]),
        get(&["disk", "kib_per_request"]),
        get(&["disk", "busy_pct"]),
    ]
}

/// Median of the finite values (`NaN` when there are none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    let finite = values.iter().copied().filter(|x| x.is_finite());
    (finite.clone().fold(f64::NAN, f64::min), finite.fold(f64::NAN, f64::max))
}

/// Every round of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// A's label and arguments.
    pub a: (String, Vec<String>),
    /// B's.
    pub b: (String, Vec<String>),
    /// Figure names.
    pub figures: Vec<&'static str>,
    /// A's figures per round.
    pub a_rounds: Vec<[f64; FIGURE_COUNT]>,
    /// B's figures per round.
    pub b_rounds: Vec<[f64; FIGURE_COUNT]>,
}

impl Comparison {
    /// B/A of figure `f` in each round.
    pub fn ratios(&self, f: usize) -> Vec<f64> {
        self.a_rounds.iter().zip(&self.b_rounds).map(|(a, b)| b[f] / a[f]).collect()
    }

    /// The table: per figure, A and B min/median/max, B/A per round and its median.
    pub fn table(&self) -> String {
        let mut out = format!(
            "A = {}: {}\nB = {}: {}\n\n{:<18} {:>32} {:>32}   {}\n",
            self.a.0,
            self.a.1.join(" "),
            self.b.0,
            self.b.1.join(" "),
            "figure",
            "A min / median / max",
            "B min / median / max",
            "B/A per round -> median"
        );
        let fmt = |x: f64| {
            if !x.is_finite() {
                "-".to_string()
            } else if x >= 10_000.0 {
                thousands(x)
            } else {
                format!("{x:.1}")
            }
        };
        for (f, name) in FIGURES.iter().enumerate() {
            let a: Vec<f64> = self.a_rounds.iter().map(|r| r[f]).collect();
            let b: Vec<f64> = self.b_rounds.iter().map(|r| r[f]).collect();
            if a.iter().chain(&b).all(|x| !x.is_finite()) {
                continue;
            }
            let (a_min, a_max) = min_max(&a);
            let (b_min, b_max) = min_max(&b);
            let ratios = self.ratios(f);
            let per_round: Vec<String> =
                ratios.iter().map(|r| if r.is_finite() { format!("{r:.3}") } else { "-".into() }).collect();
            out.push_str(&format!(
                "{name:<18} {:>32} {:>32}   {} -> {:.3}\n",
                format!("{} / {} / {}", fmt(a_min), fmt(median(&a)), fmt(a_max)),
                format!("{} / {} / {}", fmt(b_min), fmt(median(&b)), fmt(b_max)),
                per_round.join(" "),
                median(&ratios)
            ));
        }
        out
    }
}

/// Runs the scenario with `exe` (this binary), printing a line per run to
/// `log`.
pub fn compare(scenario: &Scenario, exe: &Path, log: &mut dyn Write) -> Result<Comparison, CompareError> {
    let mut comparison = Comparison {
        a: (scenario.a.label.clone(), scenario.a.args.clone()),
        b: (scenario.b.label.clone(), scenario.b.args.clone()),
        figures: FIGURES.to_vec(),
        a_rounds: Vec::new(),
        b_rounds: Vec::new(),
    };
    for round in 1..=scenario.rounds {
        for (name, side) in [("A", &scenario.a), ("B", &scenario.b)] {
            let child_err = |message: String| CompareError::Child { round, side: name.into(), message };
            let output = Command::new(exe)
                .args(&side.args)
                .args(["--output-format", "json", "--no-progress"])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| child_err(e.to_string()))?;
            if !output.status.success() {
                return Err(child_err(format!("exited with {}", output.status)));
            }
            let report: serde_json::Value =
                serde_json::from_slice(&output.stdout).map_err(|e| child_err(format!("its JSON: {e}")))?;
            let figs = figures(&report);
            let _ = writeln!(
                log,
                "round {round}/{} {name} ({}): {} IOPS, p99 {:.1} µs",
                scenario.rounds,
                side.label,
                thousands(figs[0]),
                figs[4]
            );
            if name == "A" {
                comparison.a_rounds.push(figs);
            } else {
                comparison.b_rounds.push(figs);
            }
        }
    }
    Ok(comparison)
}

/// Runs `workload` once per value of `sweep` against `device`.
pub fn sweep(
    device: &Device,
    workload: &Workload,
    sweep: &Sweep,
    monitor: &Monitor,
    label: Option<&str>,
) -> Result<Vec<(u64, Report)>, RunError> {
    let mut reports = Vec::new();
    for &value in &sweep.values {
        let mut w = workload.clone();
        sweep.key.apply(&mut w, value);
        let outcome = run(device, w, monitor)?;
        let report = Report::new(&outcome, label.map(String::from));
        eprintln!(
            "{}={value}: {} IOPS, p99 {:.1} µs",
            sweep.key.name(),
            thousands(report.results.iops),
            report.results.lat.p99_us
        );
        reports.push((value, report));
    }
    Ok(reports)
}

/// The table of a sweep.
pub fn sweep_table(key: &str, reports: &[(u64, Report)]) -> String {
    let mut out = format!(
        "{key:>10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>15}\n",
        "IOPS", "MB/s", "avg µs", "p50 µs", "p99 µs", "p99.9 µs", "bench %", "target %", "IOPS/tgt CPU-s"
    );
    for (value, r) in reports {
        let l = &r.results.lat;
        let (target, per_cpu) = r
            .cpu
            .target
            .map_or(("-".to_string(), "-".to_string()), |t| (format!("{:.1}", t.cpu_pct), thousands(t.iops_per_cpu_s)));
        out.push_str(&format!(
            "{value:>10} {:>12} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>15}\n",
            thousands(r.results.iops),
            r.results.mb_per_s,
            l.mean_us,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            r.cpu.bench.cpu_pct,
            target,
            per_cpu
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_file() {
        let s = Scenario::parse(
            "rounds = 3\n[a]\nlabel = \"fabriq\"\nargs = \"--target tcp://127.0.0.1:4420 --nqn x --qd 32\"\n\
             [b]\nargs = \"local --file /tmp/f --qd 32\"\n",
            5,
        )
        .unwrap();
        assert_eq!(s.rounds, 3);
        assert_eq!(s.a.label, "fabriq");
        assert_eq!(s.a.args[0], "run");
        assert_eq!(s.b.label, "B");
        assert_eq!(s.b.args[..3], ["local", "--file", "/tmp/f"]);
        assert!(Scenario::parse("[a]\nargs = \"x\"\n", 5).is_err());
        assert!(Scenario::parse("bogus = 1\n[a]\nargs=\"\"\n[b]\nargs=\"\"\n", 5).is_err());
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[f64::NAN]).is_nan());
        let c = Comparison {
            a: ("A".into(), vec![]),
            b: ("B".into(), vec![]),
            figures: FIGURES.to_vec(),
            a_rounds: vec![[100.0; FIGURE_COUNT], [200.0; FIGURE_COUNT]],
            b_rounds: vec![[110.0; FIGURE_COUNT], [180.0; FIGURE_COUNT]],
        };
        assert_eq!(c.ratios(0), vec![1.1, 0.9]);
        let table = c.table();
        assert!(table.contains("IOPS"), "{table}");
        assert!(table.contains("1.100 0.900 -> 1.000"), "{table}");
    }

    #[test]
    fn figures_from_json() {
        let v: serde_json::Value = serde_json::json!({
            "results": {"iops": 1000.0, "mb_per_s": 4.1, "lat": {"mean_us": 10.0, "p50_us": 9.0, "p99_us": 20.0, "p999_us": 30.0}},
            "cpu": {"target": null}
        });
        let f = figures(&v);
        assert_eq!(f[..6], [1000.0, 4.1, 10.0, 9.0, 20.0, 30.0]);
        assert!(f[6].is_nan() && f[7].is_nan() && f[8].is_nan(), "{f:?}");
        let v: serde_json::Value = serde_json::json!({
            "results": {"iops": 1000.0},
            "cpu": {"target": {"iops_per_cpu_s": 5000.0}},
            "disk": {"kib_per_request": 224.0, "busy_pct": 67.5}
        });
        let f = figures(&v);
        assert_eq!(f[6..], [5000.0, 224.0, 67.5]);
        // A disk that served nothing has no request size (null in the report).
        let v = serde_json::json!({"disk": {"kib_per_request": null, "busy_pct": 0.0}});
        assert!(figures(&v)[7].is_nan());
    }
}
