//! `fabriq-provisioner`: the daemon (see `fabriq_provisioner::daemon`). `--print-openapi`
//! prints the API's OpenAPI document; `--check-config` validates a configuration and prints
//! it with every default filled in.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fabriq_provisioner::config::Config;

/// EX_CONFIG: the configuration was refused (the unit does not restart on it).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(version, about = "fabriq's provisioner: volumes on storage nodes as one service")]
struct Args {
    /// The configuration file (TOML); without it, the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Validate the configuration, print it with every default, and exit.
    #[arg(long)]
    check_config: bool,
    /// Print the API's OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", fabriq_provisioner::api::openapi_json());
        return ExitCode::SUCCESS;
    }
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let config = match config {
        Ok(c) => c,
        Err(error) => {
            eprintln!("fabriq-provisioner: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check_config {
        match toml::to_string_pretty(&config) {
            Ok(text) => print!("{text}"),
            Err(error) => {
                eprintln!("fabriq-provisioner: {error}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "fabriq-provisioner starting");
    match fabriq_provisioner::daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "fabriq-provisioner stopped");
            eprintln!("fabriq-provisioner: {error}");
            ExitCode::FAILURE
        }
    }
}
