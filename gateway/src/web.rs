//! The HTTP surface of the gateway: `/healthz`, `/metrics` (Prometheus text format), the JSON
//! diagnostics `gwctl` reads (`/diag/calls`, `/diag/sip/trace`, `/diag/stats`), and — with a
//! control plane — the control-actions API and the agent, supervisor and caller pages (plain
//! HTML and JavaScript, embedded in the binary, no build step).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Json, Router, routing::get};
use serde::Deserialize;
use serde_json::json;

use crate::calls::server::SwitchHandle;
use crate::control::CallUri;
use crate::control::api::{self, ControlPlane};

/// What the HTTP handlers act on.
#[derive(Clone, Debug, Default)]
pub struct WebState {
    /// The running switch, if the gateway runs calls.
    pub switch: Option<SwitchHandle>,
    /// The running TDM provider, if the gateway runs TDM legs (its spans go into `/metrics`).
    pub tdm: Option<crate::tdm::TdmHandle>,
}

/// Builds the router served on the core HTTP listener, without a switch (health only).
pub fn router() -> Router {
    router_with(WebState::default())
}

/// Builds the router served on the core HTTP listener.
pub fn router_with(state: WebState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/diag/calls", get(diag_calls))
        .route("/diag/stats", get(diag_stats))
        .route("/diag/sip/trace", get(diag_trace))
        .with_state(Arc::new(state))
}

/// The pages and their assets, without the API.
pub fn pages() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/agent") }))
        .route("/agent", get(|| async { html(AGENT_HTML) }))
        .route("/supervisor", get(|| async { html(SUPERVISOR_HTML) }))
        .route("/caller", get(|| async { html(CALLER_HTML) }))
        .route(
            "/assets/common.css",
            get(|| async { asset("text/css", COMMON_CSS) }),
        )
        .route(
            "/assets/common.js",
            get(|| async { asset("text/javascript", COMMON_JS) }),
        )
        .route(
            "/assets/agent.js",
            get(|| async { asset("text/javascript", AGENT_JS) }),
        )
        .route(
            "/assets/supervisor.js",
            get(|| async { asset("text/javascript", SUPERVISOR_JS) }),
        )
        .route(
            "/assets/caller.js",
            get(|| async { asset("text/javascript", CALLER_JS) }),
        )
}

/// The API and the pages: what the access listener publishes (and the core listener too when
/// `control.access.api_on_core` is set).
pub fn control_app(plane: Arc<ControlPlane>) -> Router {
    pages().merge(api::router(plane))
}

/// The health check, the API and the pages (tests and the access listener).
pub fn app(plane: Arc<ControlPlane>) -> Router {
    router().merge(control_app(plane))
}

/// The agent page.
pub const AGENT_HTML: &str = include_str!("web/agent.html");
/// The supervisor page.
pub const SUPERVISOR_HTML: &str = include_str!("web/supervisor.html");
/// The click-to-call caller page.
pub const CALLER_HTML: &str = include_str!("web/caller.html");
const COMMON_CSS: &str = include_str!("web/common.css");
const COMMON_JS: &str = include_str!("web/common.js");
const AGENT_JS: &str = include_str!("web/agent.js");
const SUPERVISOR_JS: &str = include_str!("web/supervisor.js");
const CALLER_JS: &str = include_str!("web/caller.js");

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

fn asset(ty: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

fn no_switch() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "this gateway runs no calls (no [sip] section)"})),
    )
        .into_response()
}

async fn diag_calls(State(st): State<Arc<WebState>>) -> Response {
    let Some(sw) = &st.switch else {
        return no_switch();
    };
    let calls = sw
        .run(|sw, now| {
            let calls = sw.engine.calls(now);
            let mut out = Vec::new();
            for c in calls {
                let mut v = serde_json::to_value(&c).unwrap_or_default();
                if let Some(legs) = v.get_mut("legs").and_then(|l| l.as_array_mut()) {
                    for (leg, info) in legs.iter_mut().zip(&c.legs) {
                        if let Some(stats) = sw.media.leg_stats(info.id) {
                            leg["media"] = serde_json::to_value(stats).unwrap_or_default();
                        }
                    }
                }
                out.push(v);
            }
            out
        })
        .await;
    match calls {
        Some(c) => Json(json!({ "calls": c })).into_response(),
        None => no_switch(),
    }
}

async fn diag_stats(State(st): State<Arc<WebState>>) -> Response {
    let Some(sw) = &st.switch else {
        return no_switch();
    };
    let stats = sw
        .run(|sw, _| {
            json!({
                "counts": sw.counts(),
                "media": sw.media.counts(),
                "engine": sw.engine.stats(),
                "sip": {
                    "legs": format!("{:?}", sw.sip.stats()),
                    "transactions": format!("{:?}", sw.sip.transaction_stats()),
                },
            })
        })
        .await;
    match stats {
        Some(s) => Json(s).into_response(),
        None => no_switch(),
    }
}

/// `?since=N&call=URI`.
#[derive(Debug, Deserialize)]
struct TraceQuery {
    #[serde(default)]
    since: u64,
    call: Option<String>,
}

async fn diag_trace(State(st): State<Arc<WebState>>, Query(q): Query<TraceQuery>) -> Response {
    let Some(sw) = &st.switch else {
        return no_switch();
    };
    let call = match q.call.as_deref().map(str::parse::<CallUri>) {
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            )
                .into_response();
        }
        None => None,
    };
    let since = q.since;
    match sw
        .run(move |sw, _| sw.trace_since(since, call.as_ref()))
        .await
    {
        Some(t) => Json(json!({ "messages": t })).into_response(),
        None => no_switch(),
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

fn one(v: impl Into<f64>) -> Vec<(String, f64)> {
    vec![(String::new(), v.into())]
}

async fn metrics(State(st): State<Arc<WebState>>) -> Response {
    match metrics_text(&st).await {
        Some(out) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response(),
        None => no_switch(),
    }
}

/// The `/metrics` page (Prometheus text format); `None` when the switch has stopped.
pub async fn metrics_text(st: &WebState) -> Option<String> {
    let mut out = String::new();
    metric(
        &mut out,
        "gateway_up",
        "gauge",
        "The gateway is running.",
        &one(1.0),
    );
    let Some(sw) = &st.switch else {
        return Some(out);
    };
    let cps = sw.counters().cps();
    let snapshot = sw
        .run(|sw, now| {
            let calls = sw.engine.calls(now);
            let mut by_kind = std::collections::BTreeMap::new();
            let mut jitter_max: f64 = 0.0;
            let mut jitter_sum = 0.0;
            let mut jitter_n = 0u32;
            let mut live = crate::calls::cdr::LegMediaStats::default();
            for c in &calls {
                for l in &c.legs {
                    *by_kind.entry(l.kind.as_str()).or_insert(0u64) += 1;
                    if let Some(s) = sw.media.leg_stats(l.id) {
                        jitter_max = jitter_max.max(s.jitter_ms);
                        jitter_sum += s.jitter_ms;
                        jitter_n += 1;
                        live.packets_received += s.packets_received;
                        live.packets_sent += s.packets_sent;
                        live.packets_lost += s.packets_lost;
                    }
                }
            }
            let done = sw.media_totals().clone();
            (
                sw.counts(),
                sw.media.counts(),
                sw.engine.stats().clone(),
                sw.sip.transaction_stats().clone(),
                (sw.sip.stats().clone(), sw.sip.registrations(now)),
                by_kind,
                (
                    jitter_max,
                    if jitter_n > 0 {
                        jitter_sum / f64::from(jitter_n)
                    } else {
                        0.0
                    },
                ),
                (live, done),
            )
        })
        .await;
    let (counts, media, engine, tx, (sip, registrations), by_kind, (jmax, javg), (live, done)) =
        snapshot?;
    metric(
        &mut out,
        "gateway_calls_active",
        "gauge",
        "Calls in progress.",
        &one(counts.calls as f64),
    );
    metric(
        &mut out,
        "gateway_calls_total",
        "counter",
        "Calls created.",
        &one(engine.calls_total as f64),
    );
    metric(
        &mut out,
        "gateway_calls_answered_total",
        "counter",
        "Calls answered.",
        &one(engine.calls_answered as f64),
    );
    metric(
        &mut out,
        "gateway_calls_failed_total",
        "counter",
        "Calls that ended unanswered.",
        &one(engine.calls_failed as f64),
    );
    metric(
        &mut out,
        "gateway_calls_per_second",
        "gauge",
        "New calls per second over the last 10 s.",
        &one(cps),
    );
    let kinds: Vec<(String, f64)> = ["sip", "webrtc", "tdm", "service"]
        .iter()
        .map(|k| {
            (
                format!("kind=\"{k}\""),
                by_kind.get(k).copied().unwrap_or(0) as f64,
            )
        })
        .collect();
    metric(
        &mut out,
        "gateway_legs_active",
        "gauge",
        "Legs of live calls by technology.",
        &kinds,
    );
    metric(
        &mut out,
        "gateway_sip_legs_active",
        "gauge",
        "SIP legs live or finishing their signalling.",
        &one(counts.sip_legs as f64),
    );
    metric(
        &mut out,
        "gateway_sip_transactions_active",
        "gauge",
        "Live SIP transactions.",
        &one(counts.transactions as f64),
    );
    metric(
        &mut out,
        "gateway_sip_malformed_requests_total",
        "counter",
        "Requests that failed to parse.",
        &one(tx.malformed_requests as f64),
    );
    metric(
        &mut out,
        "gateway_sip_malformed_responses_total",
        "counter",
        "Responses that failed to parse (dropped).",
        &one(tx.malformed_responses_dropped as f64),
    );
    metric(
        &mut out,
        "gateway_sip_retransmissions_total",
        "counter",
        "SIP retransmissions sent by timers.",
        &one(tx.retransmissions as f64),
    );
    metric(
        &mut out,
        "gateway_sip_ack_timeouts_total",
        "counter",
        "Legs hung up because our 2xx was never ACKed.",
        &one(sip.ack_timeouts as f64),
    );
    metric(
        &mut out,
        "gateway_sip_refused_total",
        "counter",
        "Requests refused before a leg existed (ACL, auth, validation).",
        &one(sip.refused as f64),
    );
    let trunk = |f: &dyn Fn(&crate::calls::engine::TrunkCounters) -> f64| -> Vec<(String, f64)> {
        engine
            .trunks
            .iter()
            .map(|(n, c)| (format!("trunk=\"{n}\""), f(c)))
            .collect()
    };
    metric(
        &mut out,
        "gateway_trunk_calls_in_total",
        "counter",
        "Calls in from each trunk.",
        &trunk(&|c| c.calls_in as f64),
    );
    metric(
        &mut out,
        "gateway_trunk_calls_out_total",
        "counter",
        "Calls out to each trunk.",
        &trunk(&|c| c.calls_out as f64),
    );
    metric(
        &mut out,
        "gateway_trunk_answered_total",
        "counter",
        "Outbound calls each trunk answered.",
        &trunk(&|c| c.answered as f64),
    );
    metric(
        &mut out,
        "gateway_trunk_failed_total",
        "counter",
        "Outbound calls that failed on each trunk.",
        &trunk(&|c| c.failed as f64),
    );
    metric(
        &mut out,
        "gateway_trunk_active",
        "gauge",
        "Live legs on each trunk.",
        &trunk(&|c| c.active as f64),
    );
    metric(
        &mut out,
        "gateway_trunk_up",
        "gauge",
        "Trunk answers OPTIONS keepalives (1), does not (0), not pinged (-1).",
        &trunk(&|c| match c.up {
            Some(true) => 1.0,
            Some(false) => 0.0,
            None => -1.0,
        }),
    );
    let registered: Vec<(String, f64)> = registrations
        .iter()
        .map(|r| {
            (
                format!("trunk=\"{}\"", r.peer),
                if r.registered { 1.0 } else { 0.0 },
            )
        })
        .collect();
    metric(
        &mut out,
        "gateway_trunk_registered",
        "gauge",
        "The gateway's registration at each trunk that has `register = true` is in force (1) or not (0).",
        &registered,
    );
    let accepted: Vec<(String, f64)> = registrations
        .iter()
        .map(|r| (format!("trunk=\"{}\"", r.peer), r.accepted as f64))
        .collect();
    metric(
        &mut out,
        "gateway_trunk_registrations_total",
        "counter",
        "REGISTERs (first and refreshes) each registrar accepted.",
        &accepted,
    );
    metric(
        &mut out,
        "gateway_media_legs_active",
        "gauge",
        "Live media legs.",
        &one(media.legs as f64),
    );
    metric(
        &mut out,
        "gateway_rtp_sockets_open",
        "gauge",
        "Open RTP/RTCP sockets.",
        &one(media.sockets as f64),
    );
    metric(
        &mut out,
        "gateway_rtp_packets_received_total",
        "counter",
        "RTP packets received.",
        &one((live.packets_received + done.packets_received) as f64),
    );
    metric(
        &mut out,
        "gateway_rtp_packets_sent_total",
        "counter",
        "RTP packets sent.",
        &one((live.packets_sent + done.packets_sent) as f64),
    );
    metric(
        &mut out,
        "gateway_rtp_packets_lost_total",
        "counter",
        "RTP packets lost (RFC 3550).",
        &one((live.packets_lost + done.packets_lost).max(0) as f64),
    );
    metric(
        &mut out,
        "gateway_rtp_jitter_ms",
        "gauge",
        "Interarrival jitter over live legs.",
        &[
            ("stat=\"max\"".to_owned(), jmax),
            ("stat=\"mean\"".to_owned(), javg),
        ],
    );
    metric(
        &mut out,
        "gateway_media_timeouts_total",
        "counter",
        "Calls ended for RTP inactivity.",
        &one(engine.media_timeouts as f64),
    );
    metric(
        &mut out,
        "gateway_dtmf_digits_relayed_total",
        "counter",
        "DTMF digits relayed between legs.",
        &one(engine.digits_relayed as f64),
    );
    metric(
        &mut out,
        "gateway_dtmf_digits_deduplicated_total",
        "counter",
        "Second copies of a digit press dropped.",
        &one(engine.digits_deduplicated as f64),
    );
    if let Some(status) = match &st.tdm {
        Some(t) => t.status().await,
        None => None,
    } {
        crate::tdm::metrics::render(&status, &mut out);
    }
    Some(out)
}
