//! `flowtrain train|sample|eval|data`: the same commands as `cargo xtask`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = flowtrain::cli::Cli::parse();
    match flowtrain::cli::run(&cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
