//! The control-actions API: HTTP/JSON under `/api/v1`, events over a WebSocket, and the async
//! shell around [`ControlCore`].
//!
//! The call side (the engine) is reached only through [`CallControl`]: one method that carries
//! out a [`CallCommand`] and one that creates a browser leg from an SDP offer. It reports what
//! happens to legs with [`ControlPlane::call_event`], and new calls with
//! [`ControlPlane::incoming`]. A SIP REFER enters through [`ControlPlane::refer`].
//!
//! Effects leave the core in order and are carried out by one executor task, so the call side
//! sees commands in the order the core decided them and events are published after the
//! commands before them were carried out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, mpsc};

use super::center::Presence;
use super::config::{AgentConfig, ControlConfig, QueueConfig};
use super::core::{CallCommand, CallEvent, ControlCore, ControlError, Effect, LegId, Principal};
use super::events::{Audience, Event, EventLog, FailureReason, ResumeError, Sequenced};
use super::transfer::{LegKind, Party, TransferKind};
use super::uri::CallUri;

/// A call-side operation in flight.
pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CallSideError>> + Send + 'a>>;

/// Why the call side could not carry out a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallSideError {
    /// The call or leg is not (or no longer) there.
    #[error("no such leg or call: {0}")]
    NoSuchLeg(String),
    /// The command failed (with the call side's reason, e.g. "SDP offer has no audio").
    #[error("{0}")]
    Failed(String),
    /// The endpoint cannot be reached now (a phone that is not registered): a failed
    /// `Originate` with this error is [`FailureReason::Unreachable`].
    #[error("{0}")]
    Unreachable(String),
}

/// What the control plane needs from the call side. The engine implements it; tests and
/// benchmarks use [`super::fake::FakeCallSide`].
///
/// Commands are fire-and-start: `execute` returns once the command is under way (an
/// originated leg exists; its ringing and answer come later as [`CallEvent`]s through
/// [`ControlPlane::call_event`]). A failed `Originate` is reported to the core as that leg
/// failing; other failures are logged.
pub trait CallControl: Send + Sync + 'static {
    /// Carries out one command.
    fn execute(&self, command: CallCommand) -> CallFuture<'_, ()>;
    /// Creates the WebRTC leg `leg` in `call` from a browser's SDP offer (non-trickle: the
    /// offer carries its candidates) and returns the SDP answer. The leg is answered (it is
    /// the browser that called in, or an agent who pressed answer).
    fn accept_webrtc(
        &self,
        call: &CallUri,
        leg: LegId,
        offer_sdp: String,
    ) -> CallFuture<'_, String>;
}

/// A call side that refuses everything: what the control plane runs on until an engine is
/// attached (agents can log in and the pages load; calls cannot be placed).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCallSide;

impl CallControl for NoCallSide {
    fn execute(&self, _command: CallCommand) -> CallFuture<'_, ()> {
        Box::pin(async { Err(CallSideError::Failed("no call engine is attached".into())) })
    }

    fn accept_webrtc(
        &self,
        _call: &CallUri,
        _leg: LegId,
        _offer: String,
    ) -> CallFuture<'_, String> {
        Box::pin(async { Err(CallSideError::Failed("no call engine is attached".into())) })
    }
}

/// Control API error response (status + JSON body `{"error": {...}}`).
#[derive(Debug)]
pub struct ApiError(pub ControlError);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self.0 {
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.0.to_string();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                tracing::warn!(status = status.as_u16(), "control API refused: {message}")
            }
            _ => tracing::info!(status = status.as_u16(), "control API error: {message}"),
        }
        let mut r = (
            status,
            Json(json!({ "error": { "status": status.as_u16(), "code": code(&self.0), "message": message } })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"spanbridge\""),
            );
        }
        r
    }
}

fn code(e: &ControlError) -> &'static str {
    match e {
        ControlError::BadRequest(_) => "bad_request",
        ControlError::Unauthorized(_) => "unauthorized",
        ControlError::Forbidden(_) => "forbidden",
        ControlError::NotFound(_) => "not_found",
        ControlError::Conflict(_) => "conflict",
        ControlError::Unavailable(_) => "unavailable",
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The published event log and its live feed.
#[derive(Debug)]
struct EventHub {
    log: Mutex<EventLog>,
    feed: broadcast::Sender<Arc<Sequenced>>,
}

impl EventHub {
    fn publish(&self, ev: Event, audience: Audience) {
        let s = {
            let mut log = lock(&self.log);
            Arc::new(log.publish_to(ev, audience).clone())
        };
        let _ = self.feed.send(s);
    }
}

/// A click-to-call session (the WHIP resource).
#[derive(Debug, Clone)]
struct WhipSession {
    call: CallUri,
}

/// The control plane: the core, the event hub, and the tasks that drive them.
pub struct ControlPlane {
    core: Mutex<ControlCore>,
    hub: Arc<EventHub>,
    effects: mpsc::UnboundedSender<Vec<Effect>>,
    timer: Notify,
    calls: Arc<dyn CallControl>,
    sessions: Arc<Mutex<HashMap<uuid::Uuid, WhipSession>>>,
    heartbeat: Duration,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is a bug elsewhere; the state is still the best we have.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ControlPlane {
    /// Starts the control plane on the current tokio runtime: validates the configuration and
    /// spawns the executor and timer tasks (they end when the plane is dropped).
    pub fn start(
        config: ControlConfig,
        calls: Arc<dyn CallControl>,
    ) -> Result<Arc<Self>, super::config::ControlConfigError> {
        config.validate()?;
        let heartbeat = Duration::from_millis(config.timers.heartbeat_ms.max(100));
        let (feed, _) = broadcast::channel(4096);
        let hub = Arc::new(EventHub {
            log: Mutex::new(EventLog::new(config.timers.event_log_capacity)),
            feed,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let plane = Arc::new(ControlPlane {
            core: Mutex::new(ControlCore::new(config)),
            hub,
            effects: tx,
            timer: Notify::new(),
            calls,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            heartbeat,
        });
        tokio::spawn(executor(
            rx,
            plane.calls.clone(),
            plane.hub.clone(),
            plane.sessions.clone(),
            Arc::downgrade(&plane),
        ));
        tokio::spawn(timers(Arc::downgrade(&plane)));
        Ok(plane)
    }

    /// Runs `f` on the locked core and hands its effects to the executor, in order.
    fn apply<T>(
        &self,
        f: impl FnOnce(&mut ControlCore, Instant) -> Result<(T, Vec<Effect>), ControlError>,
    ) -> Result<T, ControlError> {
        let mut core = lock(&self.core);
        let (v, effects) = f(&mut core, Instant::now())?;
        if !effects.is_empty() {
            // Sent under the lock so batches keep the core's order.
            let _ = self.effects.send(effects);
        }
        drop(core);
        self.timer.notify_one();
        Ok(v)
    }

    fn effects(
        &self,
        f: impl FnOnce(&mut ControlCore, Instant) -> Result<Vec<Effect>, ControlError>,
    ) -> Result<(), ControlError> {
        self.apply(|c, now| f(c, now).map(|e| ((), e)))
    }

    /// Reads the core.
    pub fn read<T>(&self, f: impl FnOnce(&ControlCore, Instant) -> T) -> T {
        f(&lock(&self.core), Instant::now())
    }

    /// The call side: a new call's first leg appeared, for an agent or a queue.
    pub fn incoming(
        &self,
        call: CallUri,
        leg: LegId,
        kind: LegKind,
        caller: String,
        to: Party,
    ) -> Result<(), ControlError> {
        self.effects(|c, now| c.incoming(call, leg, kind, caller, to, now))
    }

    /// The call side: news about a leg.
    pub fn call_event(&self, ev: CallEvent) {
        let _ = self.effects(|c, now| Ok(c.call_event(ev, now)));
    }

    /// The call side: a SIP agent's REFER (blind; attended when it carried Replaces). `Ok`
    /// means 202 Accepted; progress follows as transfer events for the call's URI.
    pub fn refer(
        &self,
        call: &CallUri,
        from_leg: LegId,
        target: Party,
        kind: TransferKind,
    ) -> Result<(), ControlError> {
        self.effects(|c, now| c.refer(call, from_leg, target, kind, now))
    }

    /// The call side: a SIP agent's REFER with Replaces, with what the call side found for
    /// the dialog it names (see [`ControlCore::refer_replaces`]).
    pub fn refer_replaces(
        &self,
        call: &CallUri,
        from_leg: LegId,
        replaced: crate::control::core::ReplacedLeg,
    ) -> Result<(), ControlError> {
        self.effects(|c, now| c.refer_replaces(call, from_leg, replaced, now))
    }

    /// Every event after `after` (as an admin sees them).
    pub fn events_since(&self, after: u64) -> Result<Vec<Sequenced>, ResumeError> {
        lock(&self.hub.log).since(after)
    }

    /// Subscribes to the live feed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Sequenced>> {
        self.hub.feed.subscribe()
    }

    /// Looks up a bearer token.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        lock(&self.core).authenticate(token)
    }

    /// Live click-to-call sessions (0 once every web call has ended).
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }
}

/// Carries out effects in order.
async fn executor(
    mut rx: mpsc::UnboundedReceiver<Vec<Effect>>,
    calls: Arc<dyn CallControl>,
    hub: Arc<EventHub>,
    sessions: Arc<Mutex<HashMap<uuid::Uuid, WhipSession>>>,
    plane: Weak<ControlPlane>,
) {
    while let Some(batch) = rx.recv().await {
        for e in batch {
            match e {
                Effect::Publish(ev, aud) => {
                    if let Event::CallEnded { call_uri, .. } = &ev {
                        lock(&sessions).retain(|_, s| &s.call != call_uri);
                    }
                    hub.publish(ev, aud);
                }
                Effect::Call(cmd) => {
                    let what = format!("{cmd:?}");
                    let failed_leg = match &cmd {
                        CallCommand::Originate { call, leg, .. } => Some((call.clone(), *leg)),
                        _ => None,
                    };
                    let call = cmd.call().clone();
                    if let Err(e) = calls.execute(cmd).await {
                        tracing::warn!(uri = %call, "call side failed {what}: {e}");
                        if let (Some((call, leg)), Some(p)) = (failed_leg, plane.upgrade()) {
                            let reason = match e {
                                CallSideError::Unreachable(why) => FailureReason::Unreachable(why),
                                e => FailureReason::Rejected(e.to_string()),
                            };
                            p.call_event(CallEvent::Failed { call, leg, reason });
                        }
                    }
                }
            }
        }
    }
}

/// Fires the core's timers.
async fn timers(plane: Weak<ControlPlane>) {
    loop {
        let Some(p) = plane.upgrade() else { return };
        let next = p.read(|c, _| c.poll_timeout());
        let wake = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        // Hold only a Weak while sleeping, so dropping the plane ends this task.
        let notified = {
            let p2 = p.clone();
            async move { p2.timer.notified().await }
        };
        drop(p);
        tokio::select! {
            _ = wake => {
                let Some(p) = plane.upgrade() else { return };
                let _ = p.effects(|c, now| Ok(c.handle_timeout(now)));
            }
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

// ---- authentication ----

/// The principal of a request: `Authorization: Bearer <token>`, or `access_token=<token>` in
/// the query (WebSocket clients in browsers cannot set headers).
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl FromRequestParts<Arc<ControlPlane>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        plane: &Arc<ControlPlane>,
    ) -> Result<Self, Self::Rejection> {
        let header_token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .map(str::to_string);
        let query_token = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "access_token")
                .map(|(_, v)| percent_decode(v))
        });
        let Some(token) = header_token.or(query_token) else {
            return Err(ControlError::Unauthorized(
                "no bearer token: send Authorization: Bearer <token>".into(),
            )
            .into());
        };
        match plane.authenticate(&token) {
            Some(p) => Ok(Auth(p)),
            None => Err(ControlError::Unauthorized("unknown token".into()).into()),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b.get(i) {
            Some(b'%') => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            Some(b'+') => {
                out.push(b' ');
                i += 1;
            }
            Some(&c) => {
                out.push(c);
                i += 1;
            }
            None => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A call URI from the path.
fn parse_uri(s: &str) -> ApiResult<CallUri> {
    s.parse()
        .map_err(|e: super::uri::BadCallUri| ApiError(ControlError::BadRequest(e.to_string())))
}

/// JSON bodies with errors in our format.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                ApiError(ControlError::BadRequest(format!(
                    "cannot read the body: {e}"
                )))
            })?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        serde_json::from_slice(bytes)
            .map(Body)
            .map_err(|e| ApiError(ControlError::BadRequest(format!("invalid JSON body: {e}"))))
    }
}

// ---- routes ----

/// Every route of the API: (method, path template as in the OpenAPI document).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/calls"),
    ("get", "/api/v1/calls/{call_uri}"),
    ("post", "/api/v1/calls/{call_uri}/answer"),
    ("post", "/api/v1/calls/{call_uri}/decline"),
    ("post", "/api/v1/calls/{call_uri}/hangup"),
    ("post", "/api/v1/calls/{call_uri}/hold"),
    ("post", "/api/v1/calls/{call_uri}/resume"),
    ("post", "/api/v1/calls/{call_uri}/mute"),
    ("post", "/api/v1/calls/{call_uri}/unmute"),
    ("post", "/api/v1/calls/{call_uri}/dtmf"),
    ("post", "/api/v1/calls/{call_uri}/transfer"),
    ("post", "/api/v1/calls/{call_uri}/consult"),
    ("post", "/api/v1/calls/{call_uri}/transfer/complete"),
    ("post", "/api/v1/calls/{call_uri}/transfer/cancel"),
    ("get", "/api/v1/transfer-targets"),
    ("get", "/api/v1/agents"),
    ("post", "/api/v1/agents"),
    ("get", "/api/v1/agents/{agent_id}"),
    ("put", "/api/v1/agents/{agent_id}"),
    ("delete", "/api/v1/agents/{agent_id}"),
    ("post", "/api/v1/agents/{agent_id}/login"),
    ("post", "/api/v1/agents/{agent_id}/logout"),
    ("put", "/api/v1/agents/{agent_id}/presence"),
    ("get", "/api/v1/queues"),
    ("post", "/api/v1/queues"),
    ("get", "/api/v1/queues/{queue}"),
    ("put", "/api/v1/queues/{queue}"),
    ("delete", "/api/v1/queues/{queue}"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/click-to-call/destinations"),
    ("post", "/api/v1/click-to-call"),
    ("post", "/api/v1/whip"),
    ("get", "/api/v1/whip/{session}"),
    ("delete", "/api/v1/whip/{session}"),
];

/// The API router (paths under `/api/v1`), with its state.
pub fn router(plane: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(me))
        .route("/api/v1/calls", get(list_calls))
        .route("/api/v1/calls/{call_uri}", get(get_call))
        .route("/api/v1/calls/{call_uri}/answer", post(answer))
        .route("/api/v1/calls/{call_uri}/decline", post(decline))
        .route("/api/v1/calls/{call_uri}/hangup", post(hang_up))
        .route("/api/v1/calls/{call_uri}/hold", post(hold))
        .route("/api/v1/calls/{call_uri}/resume", post(resume))
        .route("/api/v1/calls/{call_uri}/mute", post(mute))
        .route("/api/v1/calls/{call_uri}/unmute", post(unmute))
        .route("/api/v1/calls/{call_uri}/dtmf", post(dtmf))
        .route("/api/v1/calls/{call_uri}/transfer", post(transfer))
        .route("/api/v1/calls/{call_uri}/consult", post(consult))
        .route("/api/v1/calls/{call_uri}/transfer/complete", post(complete))
        .route("/api/v1/calls/{call_uri}/transfer/cancel", post(cancel))
        .route("/api/v1/transfer-targets", get(targets))
        .route("/api/v1/agents", get(list_agents).post(add_agent))
        .route(
            "/api/v1/agents/{agent_id}",
            get(get_agent).put(update_agent).delete(remove_agent),
        )
        .route("/api/v1/agents/{agent_id}/login", post(login))
        .route("/api/v1/agents/{agent_id}/logout", post(logout))
        .route("/api/v1/agents/{agent_id}/presence", put(presence))
        .route("/api/v1/queues", get(list_queues).post(add_queue))
        .route(
            "/api/v1/queues/{queue}",
            get(get_queue).put(update_queue).delete(remove_queue),
        )
        .route("/api/v1/events", get(events))
        .route("/api/v1/click-to-call/destinations", get(destinations))
        .route("/api/v1/click-to-call", post(click_to_call_json))
        .route("/api/v1/whip", post(whip))
        .route("/api/v1/whip/{session}", get(whip_get).delete(whip_delete))
        .fallback(not_found)
        .with_state(plane)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(ControlError::NotFound(format!("no route {}", uri.path())))
}

async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}

async fn me(State(p): State<Arc<ControlPlane>>, Auth(who): Auth) -> Json<Value> {
    let agent = match &who {
        Principal::Agent(a) => p.read(|c, now| c.agent(a, now).ok()),
        _ => None,
    };
    let latest = lock(&p.hub.log).latest();
    Json(json!({ "principal": who, "agent": agent, "latest_seq": latest }))
}

async fn list_calls(State(p): State<Arc<ControlPlane>>, Auth(who): Auth) -> Json<Value> {
    Json(json!({ "calls": p.read(|c, now| c.list_calls(&who, now)) }))
}

async fn get_call(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(uri): Path<String>,
) -> ApiResult<Json<Value>> {
    let uri = parse_uri(&uri)?;
    Ok(Json(json!(p.read(|c, now| c.get_call(&who, &uri, now))?)))
}

fn call_reply(p: &ControlPlane, who: &Principal, uri: &CallUri) -> Json<Value> {
    match p.read(|c, now| c.get_call(who, uri, now)) {
        Ok(v) => Json(json!(v)),
        // The action ended the call (or handed it on): say so with the URI.
        Err(_) => Json(json!({ "call_uri": uri, "state": "released" })),
    }
}

#[derive(Debug, Deserialize)]
struct AnswerBody {
    #[serde(default)]
    sdp: Option<String>,
}

/// Answers an offered call in the browser: the page POSTs its SDP offer (WHIP-style,
/// `application/sdp`, or JSON `{"sdp": ...}`) and gets the answer.
async fn answer(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(uri): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let uri = parse_uri(&uri)?;
    let sdp_body = is_sdp(&headers);
    let offer = if sdp_body {
        String::from_utf8(body.to_vec())
            .map_err(|_| ControlError::BadRequest("the SDP offer is not UTF-8".into()))?
    } else {
        let b: AnswerBody = if body.is_empty() {
            AnswerBody { sdp: None }
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| ControlError::BadRequest(format!("invalid JSON body: {e}")))?
        };
        b.sdp.ok_or_else(|| {
            ControlError::BadRequest("answering in the browser needs the page's SDP offer".into())
        })?
    };
    check_sdp(&offer)?;
    let leg = p.read(|c, _| c.prepare_browser_answer(&who, &uri))?;
    let answer = p.calls.accept_webrtc(&uri, leg, offer).await.map_err(|e| {
        ControlError::Unavailable(format!("the WebRTC leg could not be set up: {e}"))
    })?;
    if let Err(e) = p.effects(|c, now| c.finish_browser_answer(&who, &uri, leg, now)) {
        // The offer went away while the leg was being built: release the leg.
        let _ = p
            .calls
            .execute(CallCommand::HangUp {
                call: uri.clone(),
                leg,
                cause: "normal_clearing".into(),
            })
            .await;
        return Err(e.into());
    }
    let location = format!("/api/v1/calls/{uri}");
    Ok(sdp_or_json(
        sdp_body,
        &answer,
        &location,
        json!({ "call_uri": uri, "leg": leg, "sdp": answer }),
    ))
}

fn is_sdp(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/sdp"))
}

fn check_sdp(offer: &str) -> Result<(), ControlError> {
    if !offer.trim_start().starts_with("v=0") || offer.len() > 64 * 1024 {
        return Err(ControlError::BadRequest(
            "not an SDP offer (must start with v=0, at most 64 KiB)".into(),
        ));
    }
    Ok(())
}

fn sdp_or_json(sdp_body: bool, sdp: &str, location: &str, j: Value) -> Response {
    let mut r = if sdp_body {
        (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/sdp")],
            sdp.to_string(),
        )
            .into_response()
    } else {
        (StatusCode::CREATED, Json(j)).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

macro_rules! call_action {
    ($name:ident, |$c:ident, $who:ident, $uri:ident, $now:ident| $body:expr) => {
        async fn $name(
            State(p): State<Arc<ControlPlane>>,
            Auth($who): Auth,
            Path(uri): Path<String>,
        ) -> ApiResult<Json<Value>> {
            let $uri = parse_uri(&uri)?;
            p.effects(|$c, $now| $body)?;
            Ok(call_reply(&p, &$who, &$uri))
        }
    };
}

call_action!(decline, |c, who, uri, now| c.decline(&who, &uri, now));
call_action!(hang_up, |c, who, uri, now| c.hang_up(&who, &uri, now));
call_action!(hold, |c, who, uri, _now| c.hold(&who, &uri, true));
call_action!(resume, |c, who, uri, _now| c.hold(&who, &uri, false));
call_action!(mute, |c, who, uri, _now| c.mute(&who, &uri, true));
call_action!(unmute, |c, who, uri, _now| c.mute(&who, &uri, false));
call_action!(complete, |c, who, uri, now| c
    .complete_transfer(&who, &uri, now));
call_action!(cancel, |c, who, uri, now| c
    .cancel_transfer(&who, &uri, now));

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DtmfBody {
    digits: String,
}

async fn dtmf(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(uri): Path<String>,
    Body(b): Body<DtmfBody>,
) -> ApiResult<Json<Value>> {
    let uri = parse_uri(&uri)?;
    p.effects(|c, _| c.dtmf(&who, &uri, &b.digits))?;
    Ok(call_reply(&p, &who, &uri))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    target: Party,
    #[serde(default = "blind")]
    kind: TransferKind,
}

fn blind() -> TransferKind {
    TransferKind::Blind
}

async fn transfer(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(uri): Path<String>,
    Body(b): Body<TransferBody>,
) -> ApiResult<Response> {
    let uri = parse_uri(&uri)?;
    p.effects(|c, now| c.transfer(&who, &uri, b.target, b.kind, now))?;
    Ok((StatusCode::ACCEPTED, call_reply(&p, &who, &uri)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsultBody {
    target: Party,
}

async fn consult(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(uri): Path<String>,
    Body(b): Body<ConsultBody>,
) -> ApiResult<Response> {
    let uri = parse_uri(&uri)?;
    p.effects(|c, now| c.transfer(&who, &uri, b.target, TransferKind::Attended, now))?;
    Ok((StatusCode::ACCEPTED, call_reply(&p, &who, &uri)).into_response())
}

async fn targets(State(p): State<Arc<ControlPlane>>, Auth(who): Auth) -> Json<Value> {
    Json(json!({ "targets": p.read(|c, _| c.targets(&who)) }))
}

async fn list_agents(State(p): State<Arc<ControlPlane>>, Auth(_who): Auth) -> Json<Value> {
    Json(json!({ "agents": p.read(|c, now| c.agents(now)) }))
}

async fn get_agent(
    State(p): State<Arc<ControlPlane>>,
    Auth(_who): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(p.read(|c, now| c.agent(&id, now))?)))
}

async fn add_agent(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Body(a): Body<AgentConfig>,
) -> ApiResult<Response> {
    let id = a.id.clone();
    p.apply(|c, _| c.add_agent(&who, a).map(|()| ((), Vec::new())))?;
    tracing::info!(agent = %id, "agent added");
    let v = p.read(|c, now| c.agent(&id, now))?;
    Ok((StatusCode::CREATED, Json(json!(v))).into_response())
}

async fn update_agent(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Body(a): Body<AgentConfig>,
) -> ApiResult<Json<Value>> {
    if a.id != id {
        return Err(
            ControlError::BadRequest(format!("the body's id {:?} is not {id:?}", a.id)).into(),
        );
    }
    p.apply(|c, _| c.update_agent(&who, a).map(|()| ((), Vec::new())))?;
    Ok(Json(json!(p.read(|c, now| c.agent(&id, now))?)))
}

async fn remove_agent(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.effects(|c, now| c.remove_agent(&who, &id, now))?;
    tracing::info!(agent = %id, "agent removed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    #[serde(default)]
    endpoint: Option<String>,
}

async fn login(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Body(b): Body<LoginBody>,
) -> ApiResult<Json<Value>> {
    p.effects(|c, now| c.login(&who, &id, b.endpoint.as_deref(), now))?;
    Ok(Json(json!(p.read(|c, now| c.agent(&id, now))?)))
}

async fn logout(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    p.effects(|c, now| c.logout(&who, &id, now))?;
    Ok(Json(json!(p.read(|c, now| c.agent(&id, now))?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceBody {
    presence: Presence,
    #[serde(default)]
    reason: Option<String>,
}

async fn presence(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Body(b): Body<PresenceBody>,
) -> ApiResult<Json<Value>> {
    p.effects(|c, now| c.set_presence(&who, &id, b.presence, b.reason, now))?;
    Ok(Json(json!(p.read(|c, now| c.agent(&id, now))?)))
}

async fn list_queues(State(p): State<Arc<ControlPlane>>, Auth(_who): Auth) -> Json<Value> {
    Json(json!({ "queues": p.read(|c, _| c.queues()) }))
}

async fn get_queue(
    State(p): State<Arc<ControlPlane>>,
    Auth(_who): Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    p.read(|c, _| c.queues())
        .into_iter()
        .find(|q| q.config.name == name)
        .map(|q| Json(json!(q)))
        .ok_or_else(|| ControlError::NotFound(format!("no queue {name:?}")).into())
}

async fn add_queue(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Body(q): Body<QueueConfig>,
) -> ApiResult<Response> {
    let name = q.name.clone();
    p.apply(|c, _| c.add_queue(&who, q).map(|()| ((), Vec::new())))?;
    tracing::info!(queue = %name, "queue added");
    let v = p
        .read(|c, _| c.queues())
        .into_iter()
        .find(|q| q.config.name == name);
    Ok((StatusCode::CREATED, Json(json!(v))).into_response())
}

async fn update_queue(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(name): Path<String>,
    Body(q): Body<QueueConfig>,
) -> ApiResult<Json<Value>> {
    if q.name != name {
        return Err(ControlError::BadRequest(format!(
            "the body's name {:?} is not {name:?}",
            q.name
        ))
        .into());
    }
    p.effects(|c, now| c.update_queue(&who, q, now))?;
    let v = p
        .read(|c, _| c.queues())
        .into_iter()
        .find(|q| q.config.name == name);
    Ok(Json(json!(v)))
}

async fn remove_queue(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    p.apply(|c, _| c.remove_queue(&who, &name).map(|()| ((), Vec::new())))?;
    tracing::info!(queue = %name, "queue removed");
    Ok(StatusCode::NO_CONTENT)
}

// ---- events ----

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Resume after this sequence number; absent: only new events.
    after: Option<u64>,
}

async fn events(
    State(p): State<Arc<ControlPlane>>,
    Auth(who): Auth,
    Query(q): Query<EventsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| event_stream(p, who, q.after, socket))
}

fn visible(who: &Principal, s: &Sequenced) -> bool {
    match who {
        Principal::Admin | Principal::Supervisor => true,
        Principal::Agent(a) => s.audience.includes(a),
    }
}

async fn send_json(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    v: &impl serde::Serialize,
) -> bool {
    match serde_json::to_string(v) {
        Ok(text) => tx.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => true,
    }
}

async fn event_stream(p: Arc<ControlPlane>, who: Principal, after: Option<u64>, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    // Subscribe before reading the backlog, so nothing published in between is lost.
    let mut feed = p.subscribe();
    let heartbeat = p.heartbeat;
    let mut last = match after {
        Some(a) => a,
        None => lock(&p.hub.log).latest(),
    };
    let hub = p.hub.clone();
    drop(p);
    let (backlog, latest) = {
        let log = lock(&hub.log);
        (log.since(last), log.latest())
    };
    let events = match backlog {
        Ok(events) => events,
        Err(e) => {
            let _ = send_json(
                &mut tx,
                &json!({ "type": "error", "code": "resume_failed", "message": e.to_string() }),
            )
            .await;
            let _ = tx.close().await;
            return;
        }
    };
    // First the greeting (where the stream resumes from), then what was missed, then live.
    if !send_json(
        &mut tx,
        &json!({ "type": "hello", "after": last, "latest": latest, "principal": who }),
    )
    .await
    {
        return;
    }
    for e in events {
        last = e.seq;
        if visible(&who, &e) && !send_json(&mut tx, &e).await {
            return;
        }
    }
    let mut beat = tokio::time::interval(heartbeat);
    beat.tick().await;
    loop {
        tokio::select! {
            m = feed.recv() => match m {
                Ok(e) => {
                    if e.seq <= last { continue; }
                    last = e.seq;
                    if visible(&who, &e) && !send_json(&mut tx, &*e).await { return; }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the live feed: catch up from the log.
                    let missed = lock(&hub.log).since(last);
                    match missed {
                        Ok(events) => for e in events {
                            last = e.seq;
                            if visible(&who, &e) && !send_json(&mut tx, &e).await { return; }
                        },
                        Err(e) => {
                            let _ = send_json(&mut tx, &json!({ "type": "error", "code": "resume_failed", "message": e.to_string() })).await;
                            let _ = tx.close().await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = beat.tick() => {
                if !send_json(&mut tx, &json!({ "type": "heartbeat", "seq": last })).await { return; }
            }
            m = rx.next() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

// ---- click-to-call ----

async fn destinations(State(p): State<Arc<ControlPlane>>) -> Json<Value> {
    let d: Vec<Value> = p.read(|c, _| {
        c.config()
            .click_to_call
            .iter()
            .map(|d| json!({ "id": d.id, "label": d.label }))
            .collect()
    });
    Json(json!({ "destinations": d }))
}

#[derive(Debug, Deserialize)]
struct WhipQuery {
    destination: Option<String>,
    caller: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClickToCallBody {
    destination: String,
    sdp: String,
    #[serde(default)]
    caller: Option<String>,
}

async fn start_web_call(
    p: &Arc<ControlPlane>,
    destination: &str,
    caller: Option<String>,
    offer: String,
) -> ApiResult<(CallUri, uuid::Uuid, String)> {
    check_sdp(&offer)?;
    let target = p.read(|c, _| c.click_to_call_target(destination))?;
    let call = CallUri::new();
    let leg = LegId::new();
    let answer = p
        .calls
        .accept_webrtc(&call, leg, offer)
        .await
        .map_err(|e| {
            ControlError::Unavailable(format!("the WebRTC leg could not be set up: {e}"))
        })?;
    let caller = caller
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.chars().filter(|ch| !ch.is_control()).take(64).collect())
        .unwrap_or_else(|| "web caller".to_string());
    if let Err(e) = p.incoming(call.clone(), leg, LegKind::WebRtc, caller, target) {
        let _ = p
            .calls
            .execute(CallCommand::HangUp {
                call: call.clone(),
                leg,
                cause: "unroutable".into(),
            })
            .await;
        return Err(e.into());
    }
    let session = uuid::Uuid::new_v4();
    // The call may have ended already (no agent and no queue); the session is still created
    // and reads as ended.
    lock(&p.sessions).insert(session, WhipSession { call: call.clone() });
    tracing::info!(uri = %call, destination, "click-to-call started");
    Ok((call, session, answer))
}

/// WHIP-style: `POST /api/v1/whip?destination=ID` with `Content-Type: application/sdp`.
async fn whip(
    State(p): State<Arc<ControlPlane>>,
    Query(q): Query<WhipQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    if !is_sdp(&headers) {
        return Err(
            ControlError::BadRequest("WHIP needs Content-Type: application/sdp".into()).into(),
        );
    }
    let dest = q
        .destination
        .ok_or_else(|| ControlError::BadRequest("missing ?destination=".into()))?;
    let offer = String::from_utf8(body.to_vec())
        .map_err(|_| ControlError::BadRequest("the SDP offer is not UTF-8".into()))?;
    let (call, session, answer) = start_web_call(&p, &dest, q.caller, offer).await?;
    let location = format!("/api/v1/whip/{session}");
    let mut r = sdp_or_json(true, &answer, &location, Value::Null);
    if let Ok(v) = HeaderValue::from_str(&call.to_string()) {
        r.headers_mut().insert("x-call-uri", v);
    }
    Ok(r)
}

/// The same with JSON in and out.
async fn click_to_call_json(
    State(p): State<Arc<ControlPlane>>,
    Body(b): Body<ClickToCallBody>,
) -> ApiResult<Response> {
    let (call, session, answer) = start_web_call(&p, &b.destination, b.caller, b.sdp).await?;
    let location = format!("/api/v1/whip/{session}");
    Ok(sdp_or_json(
        false,
        &answer,
        &location,
        json!({ "call_uri": call, "sdp": answer, "resource": location }),
    ))
}

fn session(p: &ControlPlane, id: &str) -> ApiResult<WhipSession> {
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| ControlError::NotFound("no such click-to-call session".into()))?;
    lock(&p.sessions).get(&id).cloned().ok_or_else(|| {
        ControlError::NotFound("no such click-to-call session (the call has ended)".into()).into()
    })
}

async fn whip_get(
    State(p): State<Arc<ControlPlane>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = session(&p, &id)?;
    let v = p.read(|c, now| c.get_call(&Principal::Supervisor, &s.call, now));
    Ok(Json(match v {
        Ok(v) => {
            json!({ "call_uri": s.call, "state": v.state, "queue": v.queue, "position": v.position, "expected_wait_s": v.expected_wait_s, "agent": v.agent })
        }
        Err(_) => json!({ "call_uri": s.call, "state": "ended" }),
    }))
}

async fn whip_delete(
    State(p): State<Arc<ControlPlane>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let s = session(&p, &id)?;
    if let Ok(id) = id.parse::<uuid::Uuid>() {
        lock(&p.sessions).remove(&id);
    }
    match p.effects(|c, now| c.caller_hang_up(&s.call, now)) {
        Ok(()) | Err(ControlError::NotFound(_)) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(e.into()),
    }
}
