//! `gwctl`: spanbridge's operator CLI — audio tools, TDM diagnostics, and (as they land) call and
//! SIP inspection against a running gateway.

mod audio;
mod calls;
mod http;
mod pri;
mod signals;
mod tdm;

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
    /// DTMF detection and generation.
    #[command(subcommand)]
    Dtmf(DtmfCommand),
    /// DAHDI span and channel diagnostics.
    Tdm {
        /// DAHDI device tree.
        #[arg(long, env = "DAHDI_ROOT", default_value = tdm_driver::DEFAULT_DEVICE_ROOT)]
        root: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: TdmCommand,
    },
    /// ISDN PRI: decoded D-channel traces (live from a gateway, or from a capture file).
    #[command(subcommand)]
    Pri(PriCommand),
    /// Live calls of a running gateway: legs, codecs, packets, jitter, loss.
    Calls {
        /// The gateway's HTTP listener.
        #[arg(long, env = "GWCTL_GATEWAY", default_value = "127.0.0.1:8080")]
        gateway: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// SIP diagnostics.
    #[command(subcommand)]
    Sip(SipCommand),
    /// Write a call-progress tone (dial, ringback, busy, congestion) to a WAV file.
    Tone {
        /// Tone plan: us, etsi, uk, de, fr.
        country: String,
        /// dial, ringback, busy or congestion.
        kind: String,
        /// Output WAV file (8 kHz, 16-bit).
        output: PathBuf,
        /// Duration in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
}

#[derive(Debug, Subcommand)]
enum PriCommand {
    /// Follow SPAN's D-channel on a running gateway (Q.921/Q.931 decoded), or decode a capture
    /// file with --file.
    Trace {
        /// Span number (live trace).
        span: Option<u32>,
        /// The gateway's core HTTP listener.
        #[arg(long, env = "SPANBRIDGE_URL", default_value = "http://127.0.0.1:8080")]
        gateway: String,
        /// Decode this capture instead (pcap LINKTYPE_LINUX_LAPD, or hex lines, `<`/`>` for
        /// received/sent).
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --file: the side that recorded it (network or user), for command/response.
        #[arg(long, default_value = "network")]
        role: String,
        /// Also write the live frames to this pcap file (Wireshark reads it).
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// Stop after this many frames.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<f64>,
    },
}

#[derive(Debug, Subcommand)]
enum TdmCommand {
    /// Spans: alarms, sync source, framing, error counters (like dahdi_scan / lsdahdi). With
    /// --gateway: the running gateway's view — D-channel (Q.921 link, TEI) and B-channel use.
    Spans {
        /// Ask this gateway (its core HTTP listener) instead of reading the device tree.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Channels: signalling, law, hook state, alarms.
    Channels {
        /// Only this span.
        #[arg(long)]
        span: Option<i32>,
    },
    /// Timing accuracy of the master clock, like dahdi_test (fails below 99.9 %).
    Test {
        /// Seconds to measure (one pass per second).
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// Tone loopback check: 1004 Hz at -10 dBm0 out on SPAN/CHAN, measured on the peer.
    Loop {
        /// Channel to send on, SPAN/CHAN.
        channel: String,
        /// Channel the tone should come back on (default: the same one, via a loopback).
        #[arg(long)]
        peer: Option<String>,
        /// Duration in seconds.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
    /// Record what a channel receives to a WAV file.
    Monitor {
        /// SPAN/CHAN.
        channel: String,
        /// Output WAV (8 kHz, 16-bit).
        output: PathBuf,
        /// Duration in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

#[derive(Debug, Subcommand)]
enum SipCommand {
    /// SIP messages the gateway sent and received (live with --follow), or the ladder diagram
    /// of one call.
    Trace {
        /// The gateway's HTTP listener.
        #[arg(long, env = "GWCTL_GATEWAY", default_value = "127.0.0.1:8080")]
        gateway: String,
        /// Only this call (its URI, as `gwctl calls` shows it).
        #[arg(long)]
        call: Option<String>,
        /// Draw a ladder diagram instead of printing the messages.
        #[arg(long)]
        ladder: bool,
        /// Keep printing new messages.
        #[arg(long, short)]
        follow: bool,
    },
    /// Send OPTIONS to a SIP URI and print the status and round-trip time.
    Ping {
        /// Where, e.g. sip:127.0.0.1:5060 or sip:pbx.example.com.
        uri: String,
        /// How many pings (one a second).
        #[arg(long, short, default_value_t = 1)]
        count: u32,
        /// Seconds to wait for each answer (retransmitting as RFC 3261 says).
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
}

#[derive(Debug, Subcommand)]
enum DtmfCommand {
    /// Print every DTMF digit in an audio file, one line each: START_MS END_MS DIGIT.
    Detect {
        /// Audio file (.wav at 8/16/24/32/48 kHz, .ul, .al, .raw/.s16).
        input: PathBuf,
        /// Input format (overrides the extension).
        #[arg(long, value_enum)]
        from: Option<AudioFormat>,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Write DTMF digits (0-9, *, #, A-D) to a WAV file (8 kHz, 16-bit).
    Generate {
        /// The digits.
        digits: String,
        /// Output WAV file.
        output: PathBuf,
        /// Level of each tone in dBm0.
        #[arg(long, default_value_t = -10.0, allow_negative_numbers = true)]
        level: f32,
        /// High tone minus low tone, dB (negative: normal twist).
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        twist: f32,
        /// Tone duration per digit, ms.
        #[arg(long, default_value_t = 80)]
        on_ms: u32,
        /// Pause after each digit, ms.
        #[arg(long, default_value_t = 80)]
        off_ms: u32,
    },
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
        Command::Dtmf(DtmfCommand::Detect { input, from, json }) => {
            let digits = signals::detect(&input, from)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&digits)?);
            } else {
                for d in &digits {
                    println!("{} {} {}", d.start_ms, d.end_ms, d.digit);
                }
            }
        }
        Command::Dtmf(DtmfCommand::Generate {
            digits,
            output,
            level,
            twist,
            on_ms,
            off_ms,
        }) => {
            let params = codecs::dtmf::DtmfParams {
                level_dbm0: level,
                twist_db: twist,
                on_ms,
                off_ms,
            };
            let n = signals::generate(&digits, &output, &params)?;
            eprintln!(
                "{} digits, {:.2} s -> {}",
                digits.chars().count(),
                n as f64 / 8000.0,
                output.display()
            );
        }
        Command::Tdm {
            root,
            json,
            command,
        } => {
            let text = match command {
                TdmCommand::Spans { gateway: None } => tdm::spans(&root, json)?,
                TdmCommand::Spans { gateway: Some(url) } => pri::spans_from_gateway(&url, json)?,
                TdmCommand::Channels { span } => tdm::channels(&root, span, json)?,
                TdmCommand::Test { seconds } => tdm::timing_test(&root, seconds, json)?,
                TdmCommand::Loop {
                    channel,
                    peer,
                    seconds,
                } => tdm::loopback(&root, &channel, peer.as_deref(), seconds, json)?,
                TdmCommand::Monitor {
                    channel,
                    output,
                    seconds,
                } => tdm::monitor(&root, &channel, &output, seconds)?,
            };
            print!("{text}");
        }
        Command::Pri(PriCommand::Trace {
            span,
            gateway,
            file,
            role,
            pcap,
            json,
            count,
            seconds,
        }) => match (file, span) {
            (Some(f), _) => print!("{}", pri::decode(&f, &role, json)?),
            (None, Some(span)) => pri::live(&pri::LiveTrace {
                gateway: &gateway,
                span,
                pcap: pcap.as_deref(),
                json,
                count,
                seconds,
            })?,
            (None, None) => return Err("give a span number (live trace) or --file CAPTURE".into()),
        },
        Command::Calls { gateway, json } => print!("{}", calls::calls(&gateway, json)?),
        Command::Sip(SipCommand::Trace {
            gateway,
            call,
            ladder,
            follow,
        }) => calls::trace(&gateway, call.as_deref(), ladder, follow)?,
        Command::Sip(SipCommand::Ping {
            uri,
            count,
            timeout,
        }) => {
            let timeout = std::time::Duration::from_secs_f64(timeout.clamp(0.1, 600.0));
            calls::ping(&uri, count, timeout)?;
        }
        Command::Tone {
            country,
            kind,
            output,
            seconds,
        } => {
            let n = signals::tone(&country, &kind, seconds, &output)?;
            eprintln!(
                "{country} {kind}: {:.2} s -> {}",
                n as f64 / 8000.0,
                output.display()
            );
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
