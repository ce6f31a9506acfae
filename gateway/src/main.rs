//! `gateway`: runs spanbridge on a configuration file or on its embedded default.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::{Config, DEFAULT_CONFIG};
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::telemetry::{self, LogFormat};
use gateway::web::WebState;

/// spanbridge media gateway (WebRTC, SIP and TDM legs; control-actions API).
#[derive(Debug, Parser)]
#[command(name = "gateway", version)]
struct Args {
    /// Configuration file (TOML). Without it the embedded default runs.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Log format: human or json.
    #[arg(long, default_value = "human")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = telemetry::init(args.log_format, "info") {
        eprintln!("gateway: {e}");
        return ExitCode::from(2);
    }
    raise_fd_limit();
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Config::embedded_default(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = config.control.validate() {
        tracing::error!("{e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Every call holds sockets (two RTP sockets per SIP leg, streams, TDM channels), so the
/// default soft limit of 1,024 descriptors would cap a gateway at a few hundred calls: raise
/// the soft limit to the hard one, as media relays do, and say what it is.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!("cannot raise the open-file limit from {soft}: {e}"),
        },
        Ok(_) | Err(_) => {}
    }
}

async fn run(config: Config) -> Result<(), std::io::Error> {
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {} (http.listen): {e}", config.http.listen),
            )
        })?;
    // TDM legs run in their own task on a provider port of the shell.
    let mut external = if config.tdm.is_some() {
        vec![gateway::calls::leg::LegKind::Tdm]
    } else {
        Vec::new()
    };
    // WebRTC legs too ([rtc]).
    if config.rtc.is_some() {
        external.push(gateway::calls::leg::LegKind::WebRtc);
    }
    let mut server = match &config.sip {
        Some(_) => {
            let m = &config.media;
            let plane = MediaPlane::start(PlaneConfig {
                workers: m.workers,
                rtp_ports: m.rtp_port_min..=m.rtp_port_max,
                ..PlaneConfig::default()
            })
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start the media plane ([media]): {e}"),
                )
            })?;
            tracing::info!(
                workers = plane.worker_count(),
                ports = %format!("{}-{}", m.rtp_port_min, m.rtp_port_max),
                "media plane up"
            );
            let country = m.tones.parse().unwrap_or(Country::Etsi);
            let media = PlaneMedia::new(
                plane,
                std::time::Duration::from_secs(m.inactivity_timeout_s),
                country,
            );
            Some(
                GatewayServer::start(
                    ServerOptions {
                        config: config.clone(),
                        timers: None,
                        seed: None,
                        external,
                    },
                    Box::new(media),
                )
                .await?,
            )
        }
        None => {
            tracing::info!("no [sip] section: no calls, HTTP only");
            None
        }
    };
    let tdm = match (&config.tdm, server.as_mut()) {
        (Some(t), Some(s)) => match s.take_provider(gateway::calls::leg::LegKind::Tdm) {
            Some(port) => Some(
                gateway::tdm::start(t, &config.span_groups, port)
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            ),
            None => None,
        },
        (Some(_), None) => {
            tracing::warn!(
                "[tdm] is configured but there is no [sip] section: no calls, so no TDM legs"
            );
            None
        }
        _ => None,
    };
    let rtc = match (&config.rtc, server.as_mut()) {
        (Some(r), Some(s)) => match s.take_provider(gateway::calls::leg::LegKind::WebRtc) {
            Some(port) => Some(
                gateway::rtc::provider::start(r, port)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            ),
            None => None,
        },
        _ => None,
    };
    // SIP over WebSocket for browser softphones ([rtc] sip_ws): their calls are WebRTC legs.
    // [rtc] sip_wss adds the wss:// listener (certificate and key loaded and checked with the
    // configuration).
    let sip_wss = match config.rtc.as_ref().map(|r| r.wss_tls()) {
        Some(Err(e)) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("[rtc] {e}"),
            ));
        }
        Some(Ok(w)) => w,
        None => None,
    };
    let sip_ws_listen = config.rtc.as_ref().and_then(|r| r.sip_ws);
    let _sip_ws = match (&rtc, sip_ws_listen.is_some() || sip_wss.is_some()) {
        (Some(r), true) => Some(
            gateway::rtc::sipws::SipWsServer::start(
                gateway::rtc::sipws::SipWsConfig {
                    listen: sip_ws_listen,
                    wss: sip_wss,
                    realm: config
                        .sip
                        .as_ref()
                        .map_or_else(|| "spanbridge".to_owned(), |s| s.realm.clone()),
                    users: config
                        .users
                        .iter()
                        .map(|u| (u.name.clone(), u.password.clone()))
                        .collect(),
                    timers: gateway::sip::transaction::TimerConfig::default(),
                },
                r.handle(),
            )
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot bind the SIP WebSocket listener ([rtc] sip_ws {sip_ws_listen:?} \
                         sip_wss {:?}): {e}",
                        config.rtc.as_ref().and_then(|r| r.sip_wss)
                    ),
                )
            })?,
        ),
        _ => None,
    };
    let state = WebState {
        switch: server.as_ref().map(GatewayServer::handle),
        tdm: tdm.as_ref().map(gateway::tdm::TdmService::handle),
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        "HTTP listener up: /healthz, /metrics, /diag/calls, /diag/sip/trace"
    );
    // The control plane on the call engine (SIP agents are offered real calls; browsers get
    // WebRTC legs when [rtc] is configured); without a [sip] section, on a call side that
    // refuses calls (agents log in, pages load).
    let side = server.as_ref().map(|s| {
        let side = gateway::calls::control_side::EngineCallSide::new(s.handle())
            .with_span_groups(&config.span_groups);
        // Browser callers and agents answering in the page get WebRTC legs ([rtc]).
        match &rtc {
            Some(r) => side.with_rtc(r.handle()),
            None => side,
        }
    });
    let calls: std::sync::Arc<dyn gateway::control::api::CallControl> = match &side {
        Some(s) => std::sync::Arc::new(s.clone()),
        None => std::sync::Arc::new(gateway::control::api::NoCallSide),
    };
    let plane = gateway::control::api::ControlPlane::start(config.control.clone(), calls)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    if let Some(s) = &side {
        s.attach(&plane);
    }
    let control_app = gateway::web::control_app(plane.clone());
    if config.control.access.listen.is_some() {
        let access = gateway::control::access::AccessListener::bind(&config.control.access)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tracing::info!(
            listen = %access.local_addr()?,
            tls = access.is_tls(),
            "access listener up: /api/v1, /agent, /supervisor, /caller"
        );
        let app = gateway::web::router().merge(control_app.clone());
        tokio::spawn(async move {
            if let Err(e) = access.serve(app, std::future::pending()).await {
                tracing::error!("access listener failed: {e}");
            }
        });
    }
    let mut core_app = gateway::web::router_with(state);
    if let Some(t) = &tdm {
        core_app = core_app.merge(gateway::tdm::http::router(t.handle()));
        tracing::info!("TDM API up: /api/v1/tdm/spans, /api/v1/tdm/spans/SPAN/trace");
    }
    if let Some(r) = &rtc {
        core_app = core_app.merge(gateway::rtc::http::router(r.handle()));
        tracing::info!("WebRTC signalling up: /api/v1/rtc/whip, /api/v1/rtc/ice-servers");
    }
    if config.control.access.api_on_core {
        core_app = core_app.merge(control_app);
    }
    let served = axum::serve(listener, core_app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await;
    if let Some(t) = tdm {
        t.shutdown().await;
    }
    if let Some(r) = rtc {
        r.shutdown().await;
    }
    if let Some(s) = server {
        s.shutdown().await?;
    }
    served
}
