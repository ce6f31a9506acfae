//! TDM legs: E1/T1 spans (PRI, E&M, loop start) as a leg provider of the call engine, and the
//! operator's view of them over HTTP (`/api/v1/tdm/...`: span, D-channel and channel state, and
//! a live decoded D-channel trace that `gwctl tdm spans` and `gwctl pri trace` read).
//!
//! - [`config`]: `[tdm]` — backend (the in-process simulated E1 pair, or a DAHDI device tree)
//!   and each span's signalling;
//! - [`provider`]: [`TdmProvider`], the engine's [`LegProvider`](crate::calls::leg::LegProvider)
//!   for TDM legs;
//! - [`port`]: a channel's audio rings lent to the media plane for one call;
//! - [`http`]: the axum router the binary mounts;
//! - [`start`] / [`spawn`]: run a provider in a tokio task on a
//!   [`ProviderPort`](crate::calls::server::ProviderPort) of the shell.

pub mod config;
pub mod http;
pub mod metrics;
pub mod port;
pub mod provider;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::{TdmBackend, TdmConfig};
pub use port::{PortHome, TdmPort};
pub use provider::{TdmProvider, TdmStartError, TdmStatus};

use crate::calls::leg::LegProvider;
use crate::calls::server::ProviderPort;
use crate::config::SpanGroupConfig;
use tdm_driver::Backend;
use tdm_driver::pri::trace::TraceRecord;

/// What the HTTP side (and tests) use to reach a running TDM provider.
#[derive(Debug, Clone)]
pub struct TdmHandle {
    queries: mpsc::Sender<oneshot::Sender<TdmStatus>>,
    traces: broadcast::Sender<TraceRecord>,
}

impl TdmHandle {
    /// The provider's current state (`None` once it stopped).
    pub async fn status(&self) -> Option<TdmStatus> {
        let (tx, rx) = oneshot::channel();
        self.queries.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// Every D-channel frame from now on (all spans).
    pub fn subscribe_trace(&self) -> broadcast::Receiver<TraceRecord> {
        self.traces.subscribe()
    }
}

/// A running TDM provider task.
#[derive(Debug)]
pub struct TdmService {
    handle: TdmHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TdmService {
    /// Its handle.
    pub fn handle(&self) -> TdmHandle {
        self.handle.clone()
    }

    /// Stops the task; the provider's span threads stop and every channel closes.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Runs `provider` in a tokio task serving `port`: commands in, events out, timers.
pub fn spawn<B: Backend + 'static>(
    mut provider: TdmProvider<B>,
    mut port: ProviderPort,
) -> TdmService {
    let (queries, mut query_rx) = mpsc::channel::<oneshot::Sender<TdmStatus>>(16);
    let (traces, _) = broadcast::channel(4096);
    let trace_tx = traces.clone();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            let deadline = provider.poll_timeout();
            tokio::select! {
                cmd = port.commands.recv() => match cmd {
                    Some((leg, c)) => provider.handle_command(Instant::now(), leg, c),
                    None => break,
                },
                q = query_rx.recv() => {
                    if let Some(tx) = q {
                        let _ = tx.send(provider.status());
                    }
                }
                _ = sleep_until(deadline) => provider.handle_timeout(Instant::now()),
                _ = &mut stopped => break,
            }
            while let Some((leg, ev)) = provider.poll_event() {
                if port.events.send((leg, ev)).is_err() {
                    tracing::warn!("the call engine is gone; TDM provider stops");
                    provider.shutdown();
                    return;
                }
            }
            for t in provider.take_traces() {
                let _ = trace_tx.send(t);
            }
        }
        provider.shutdown();
    });
    TdmService {
        handle: TdmHandle { queries, traces },
        stop: Some(stop),
        task,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Starts the TDM provider of `tdm` (with the span groups of the main configuration) on the
/// backend it names and runs it on `port`.
pub fn start(
    tdm: &TdmConfig,
    groups: &[SpanGroupConfig],
    port: ProviderPort,
) -> Result<TdmService, TdmStartError> {
    let now = Instant::now();
    let ids = port.ids.clone();
    match tdm.backend {
        TdmBackend::Sim => {
            let sim = Arc::new(tdm_driver::sim::SimSpans::preconfigured(
                tdm_driver::sim::ClockMode::Thread,
            ));
            let configure = tdm.configure.unwrap_or(true);
            let p = TdmProvider::start(now, sim, tdm, groups, ids, configure)?;
            Ok(spawn(p, port))
        }
        TdmBackend::Dahdi => {
            let root = Arc::new(tdm_driver::DeviceRoot::new(&tdm.root));
            let configure = tdm.configure.unwrap_or(false);
            let p = TdmProvider::start(now, root, tdm, groups, ids, configure)?;
            Ok(spawn(p, port))
        }
    }
}
