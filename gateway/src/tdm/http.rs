//! The TDM part of the HTTP API, mounted by the binary on its core listener:
//!
//! - `GET /api/v1/tdm/spans`: every span — alarms, signalling, the D-channel (Q.921 link,
//!   state, TEI, frame counters) and each channel's use (idle, busy with its leg, blocked);
//! - `GET /api/v1/tdm/spans/{span}/trace`: the span's D-channel live, one JSON object per
//!   line (chunked): time, direction, side, the frame in hex, and its decoded text (Q.921
//!   frame, Q.931 message and elements). `?format=text` gives the decoded text only.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::TdmHandle;
use tdm_driver::pri::q921::Role;
use tdm_driver::pri::trace::{Direction, TraceRecord};

/// The router (state: the running provider's handle).
pub fn router(handle: TdmHandle) -> Router {
    Router::new()
        .route("/api/v1/tdm/spans", get(spans))
        .route("/api/v1/tdm/spans/{span}/trace", get(trace))
        .with_state(handle)
}

async fn spans(State(h): State<TdmHandle>) -> Response {
    match h.status().await {
        Some(s) => axum::Json(s).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the TDM provider is not running\n",
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct TraceQuery {
    #[serde(default)]
    format: Option<String>,
}

/// One trace record as a JSON line.
pub fn record_json(r: &TraceRecord) -> String {
    let hex: String = r.frame.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({
        "time_us": r.unix_micros,
        "span": r.span,
        "dir": match r.dir { Direction::Rx => "rx", Direction::Tx => "tx" },
        "role": match r.role { Role::Network => "network", Role::User => "user" },
        "hex": hex,
        "text": r.to_text(),
    })
    .to_string()
}

async fn trace(
    State(h): State<TdmHandle>,
    Path(span): Path<u32>,
    Query(q): Query<TraceQuery>,
) -> Response {
    let Some(status) = h.status().await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the TDM provider is not running\n",
        )
            .into_response();
    };
    match status.spans.iter().find(|s| s.span == span) {
        None => {
            return (StatusCode::NOT_FOUND, format!("no span {span} in [tdm]\n")).into_response();
        }
        Some(s) if s.dchannel.is_none() => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "span {span} is {}: it has no D-channel to trace\n",
                    s.signalling
                ),
            )
                .into_response();
        }
        Some(_) => {}
    }
    let text = q.format.as_deref() == Some("text");
    let rx = h.subscribe_trace();
    let head = format!(
        "{}\n",
        if text {
            format!("# tracing span {span}")
        } else {
            serde_json::json!({ "tracing": span }).to_string()
        }
    );
    let stream = futures_util::stream::unfold((rx, Some(head)), move |(mut rx, head)| async move {
        if let Some(h) = head {
            return Some((Ok::<_, std::io::Error>(h), (rx, None)));
        }
        loop {
            match rx.recv().await {
                Ok(r) if r.span == span => {
                    let line = if text {
                        format!("{}\n", r.to_text())
                    } else {
                        format!("{}\n", record_json(&r))
                    };
                    return Some((Ok(line), (rx, None)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let line = if text {
                        format!("# {n} frames not shown (reader too slow)\n")
                    } else {
                        format!("{}\n", serde_json::json!({ "lost": n }))
                    };
                    return Some((Ok(line), (rx, None)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            if text {
                "text/plain; charset=utf-8"
            } else {
                "application/x-ndjson"
            },
        )
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
