//! `gwctl`: spanbridge's operator CLI — audio tools, TDM diagnostics, and (as they land) call and
//! SIP inspection against a running gateway.

mod audio;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use audio::{AudioFormat, WavOut};
use gateway::telemetry::{self, LogFormat};

/// spanbridge operator tools.
#[derive(Debug, Parser)]
#[command(name = "gwctl", version, about)]
struct Cli {
    /// Log output format (logs go to stderr; filter with SPANBRIDGE_LOG, default "warn").
    #[arg(long, global = true, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the gwctl version.
    Version,
    /// Audio file conversion.
    #[command(subcommand)]
    Codec(CodecCommand),
}

#[derive(Debug, Subcommand)]
enum CodecCommand {
    /// Convert between WAV, µ-law, A-law and raw 16-bit files, resampling as needed.
    ///
    /// Formats come from the extensions (.wav; .ul/.ulaw; .al/.alaw; .raw/.s16 = signed 16-bit
    /// little-endian 8 kHz mono) or from --from/--to. Headerless outputs are 8 kHz; a WAV output
    /// keeps the input rate unless --rate is given (8 kHz for G.711 WAV).
    Convert {
        /// Input file.
        input: PathBuf,
        /// Output file.
        output: PathBuf,
        /// Input format (overrides the extension).
        #[arg(long, value_enum)]
        from: Option<AudioFormat>,
        /// Output format (overrides the extension).
        #[arg(long, value_enum)]
        to: Option<AudioFormat>,
        /// Output rate for WAV output: 8000, 16000, 24000, 32000 or 48000.
        #[arg(long)]
        rate: Option<u32>,
        /// Sample encoding of a WAV output.
        #[arg(long, value_enum, default_value = "pcm16")]
        wav_encoding: WavOut,
    },
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Version => println!("gwctl {}", env!("CARGO_PKG_VERSION")),
        Command::Codec(CodecCommand::Convert {
            input,
            output,
            from,
            to,
            rate,
            wav_encoding,
        }) => {
            let summary = audio::convert(&input, &output, from, to, rate, wav_encoding)?;
            eprintln!("{summary}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(cli.log_format, "warn") {
        eprintln!("gwctl: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gwctl: {e}");
            ExitCode::FAILURE
        }
    }
}
