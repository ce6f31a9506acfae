//! WHIP-style HTTP signalling for browser legs routed by the engine's `[[route]]` table (the
//! control plane's `/api/v1/whip` is the contact-center variant, routed by its ACD):
//!
//! - `POST /api/v1/rtc/whip?to=NUMBER[&caller=NAME]` with `Content-Type: application/sdp` and
//!   a non-trickle offer → `201 Created`, the SDP answer, `Location: /api/v1/rtc/whip/LEG`
//!   and `X-Leg-Id`. The call is then routed like a SIP INVITE to `NUMBER`.
//! - `DELETE /api/v1/rtc/whip/LEG` → `204`: hangs the call up.
//! - `GET /api/v1/rtc/ice-servers` → the STUN/TURN servers for the page's
//!   `RTCPeerConnection`.
//! - `GET /diag/rtc/legs` → every live WebRTC leg's transport and media figures
//!   ([`super::RtcLegStats`]: ICE state and selected pair, DTLS state and role, SRTP profile,
//!   codec, RTT, loss, jitter, grace period left), with its engine leg id (`gwctl calls`).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::RtcError;
use super::provider::{IncomingSpec, RtcHandle};
use crate::calls::leg::LegId;

/// The router (mount it on the core listener).
pub fn router(handle: RtcHandle) -> Router {
    Router::new()
        .route("/api/v1/rtc/whip", post(whip))
        .route("/api/v1/rtc/whip/{leg}", delete(whip_delete))
        .route("/api/v1/rtc/ice-servers", get(ice_servers))
        .route("/diag/rtc/legs", get(diag_legs))
        .with_state(handle)
}

#[derive(Debug, Deserialize)]
struct WhipQuery {
    to: Option<String>,
    caller: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    tracing::info!(
        status = status.as_u16(),
        "WebRTC signalling refused: {message}"
    );
    (
        status,
        Json(serde_json::json!({ "error": { "status": status.as_u16(), "message": message } })),
    )
        .into_response()
}

fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

async fn whip(
    State(h): State<RtcHandle>,
    Query(q): Query<WhipQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if !sdp_type {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "WHIP needs Content-Type: application/sdp",
        );
    }
    let Some(to) =
        q.to.as_deref()
            .map(|t| clean(t, 64))
            .filter(|t| !t.is_empty())
    else {
        return error(StatusCode::BAD_REQUEST, "missing ?to=NUMBER");
    };
    let Ok(offer) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8");
    };
    if !offer.trim_start().starts_with("v=0") || offer.len() > 64 * 1024 {
        return error(
            StatusCode::BAD_REQUEST,
            "not an SDP offer (must start with v=0, at most 64 KiB)",
        );
    }
    let caller = q
        .caller
        .as_deref()
        .map(|c| clean(c, 64))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "webrtc".to_owned());
    let spec = IncomingSpec {
        caller,
        callee: to,
        ..IncomingSpec::default()
    };
    match h.accept(offer, spec).await {
        Ok(a) => {
            let location = format!("/api/v1/rtc/whip/{}", a.leg.0);
            let mut r = (StatusCode::CREATED, a.sdp).into_response();
            let hs = r.headers_mut();
            hs.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                hs.insert(header::LOCATION, v);
            }
            hs.insert("x-leg-id", HeaderValue::from(a.leg.0));
            r
        }
        Err(
            e @ (RtcError::NoAudio
            | RtcError::NoCommonCodec { .. }
            | RtcError::Webrtc(_)
            | RtcError::Digit(_)),
        ) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn whip_delete(State(h): State<RtcHandle>, Path(leg): Path<String>) -> Response {
    let Ok(n) = leg.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "no such WebRTC leg");
    };
    if !h.has_leg(LegId(n)) {
        return error(
            StatusCode::NOT_FOUND,
            "no such WebRTC leg (the call has ended)",
        );
    }
    h.hang_up(LegId(n));
    StatusCode::NO_CONTENT.into_response()
}

async fn ice_servers(State(h): State<RtcHandle>) -> Response {
    Json(serde_json::json!({ "ice_servers": h.legs().client_ice_servers() })).into_response()
}

async fn diag_legs(State(h): State<RtcHandle>) -> Response {
    let mut legs = Vec::new();
    for (leg, rtc) in h.live_legs() {
        let mut v = serde_json::to_value(rtc.stats().await).unwrap_or_default();
        v["leg"] = serde_json::json!(leg.map(|l| l.0));
        legs.push(v);
    }
    Json(serde_json::json!({ "legs": legs })).into_response()
}
