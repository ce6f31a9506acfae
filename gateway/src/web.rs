//! The HTTP surface of the gateway: health check now; API and pages are mounted here as they land.

use axum::{Json, Router, routing::get};
use serde_json::json;

/// Builds the router served on the core HTTP listener.
pub fn router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}
