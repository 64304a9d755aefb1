//! The fabriq-target daemon's entry point: reads the configuration named by
//! `--config` (or takes the embedded default) and refuses to start on any error in
//! it, exiting with EX_CONFIG (78) so that the unit's `RestartPreventExitStatus=78`
//! does not restart it into the same error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fabriq_target::config::{Config, TargetSection};

/// sysexits.h: a configuration error.
const EX_CONFIG: u8 = 78;

/// fabriq's userspace NVMe over Fabrics target.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The TOML configuration. Without it: NVMe/TCP on 127.0.0.1:4420, discovery on
    /// 127.0.0.1:8009, and one subsystem open to any host whose namespace is a 1 GiB
    /// sparse file in ./fabriq-data.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration, print it with every default filled in, and exit.
    #[arg(long)]
    check_config: bool,
    /// Print the node API's OpenAPI document (what `openapi/target.json` holds) and exit.
    #[arg(long)]
    print_openapi: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", fabriq_target::api::openapi_json());
        return ExitCode::SUCCESS;
    }
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("fabriq-target: {error}");
                return ExitCode::from(EX_CONFIG);
            }
        },
        None => Config::embedded_default(&TargetSection::default().data_dir),
    };
    if args.check_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging();
    match fabriq_target::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (the journal under systemd); `RUST_LOG` filters, `info` by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colour only on a terminal: a log file or the journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if under_journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
