//! `flowtrain train|sample|eval|data`: the same commands as `cargo xtask`.

use clap::Parser;
use std::process::ExitCode;

// See `flowtrain::allocator`.
flowtrain::training_allocator!();

fn main() -> ExitCode {
    flowtrain::allocator::keep_freed_memory();
    let cli = flowtrain::cli::Cli::parse();
    match flowtrain::cli::run(&cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
