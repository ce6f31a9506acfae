//! `gwctl`: spanbridge's operator CLI — audio tools, TDM diagnostics, and (as they land) call and
//! SIP inspection against a running gateway.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// spanbridge operator tools.
#[derive(Debug, Parser)]
#[command(name = "gwctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the gwctl version and the codecs it knows.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Version => {
            println!("gwctl {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gwctl: {e}");
            ExitCode::FAILURE
        }
    }
}
