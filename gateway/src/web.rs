//! The HTTP surface of the gateway: the health check, and — when a control plane runs — the
//! control-actions API and the agent, supervisor and caller pages (plain HTML and JavaScript,
//! embedded in the binary, no build step).

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Json, Router, routing::get};
use serde_json::json;

use crate::control::api::{self, ControlPlane};

/// Builds the router served on the core HTTP listener.
pub fn router() -> Router {
    Router::new().route("/healthz", get(healthz))
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

/// The health check, the API and the pages: what the access listener publishes (and the core
/// listener too when `control.access.api_on_core` is set).
pub fn app(plane: Arc<ControlPlane>) -> Router {
    router().merge(pages()).merge(api::router(plane))
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
