//! The OpenAPI 3.1 document of the control-actions API, served at `/api/v1/openapi.json`.
//!
//! Written by hand next to the routes; a test checks that every route in
//! [`super::api::ROUTES`] is documented and every documented operation is routed.

use serde_json::{Map, Value, json};

fn err(desc: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok_json(desc: &str, schema: Value) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": schema } } })
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn call_uri_param() -> Value {
    json!({ "name": "call_uri", "in": "path", "required": true,
            "description": "The call's URI (urn:uuid:...).",
            "schema": { "type": "string", "pattern": "^(urn:uuid:)?[0-9a-fA-F-]{36}$" } })
}

fn path_param(name: &str, desc: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": desc,
            "schema": { "type": "string", "minLength": 1, "maxLength": 64 } })
}

struct Op {
    summary: &'static str,
    params: Vec<Value>,
    body: Option<Value>,
    ok: (&'static str, Value),
    errors: &'static [u16],
    public: bool,
}

fn op(o: Op) -> Value {
    let mut responses = Map::new();
    responses.insert(o.ok.0.to_string(), o.ok.1);
    for code in o.errors {
        let desc = match code {
            400 => "The request is malformed.",
            401 => "No bearer token, or an unknown one.",
            403 => {
                "The token may not do this (another agent's call, a forbidden target, not an admin)."
            }
            404 => "No such call, agent, queue, destination or session.",
            409 => "The state does not allow it (a transfer in progress, an agent on a call, ...).",
            503 => "The call side could not carry it out.",
            _ => "Error.",
        };
        responses.insert(code.to_string(), err(desc));
    }
    let mut v = json!({ "summary": o.summary, "parameters": o.params, "responses": responses });
    if let Some(b) = o.body {
        v["requestBody"] = b;
    }
    if o.public {
        v["security"] = json!([]);
    }
    v
}

fn json_body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn call_action(summary: &'static str) -> Value {
    op(Op {
        summary,
        params: vec![call_uri_param()],
        body: None,
        ok: (
            "200",
            ok_json(
                "The call afterwards (or `state: released`).",
                r("CallOrReleased"),
            ),
        ),
        errors: &[400, 401, 403, 404, 409],
        public: false,
    })
}

/// The document.
pub fn document() -> Value {
    let agent_id = || path_param("agent_id", "The agent's id.");
    let queue = || path_param("queue", "The queue's name.");
    let session = || {
        json!({ "name": "session", "in": "path", "required": true,
                "description": "The click-to-call session (from the Location header).",
                "schema": { "type": "string", "format": "uuid" } })
    };
    let mut paths = Map::new();
    let mut add = |path: &str, method: &str, v: Value| {
        let e = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        e[method] = v;
    };
    add(
        "/api/v1/openapi.json",
        "get",
        op(Op {
            summary: "This document.",
            params: vec![],
            body: None,
            ok: ("200", ok_json("OpenAPI 3.1.", json!({ "type": "object" }))),
            errors: &[],
            public: true,
        }),
    );
    add(
        "/api/v1/me",
        "get",
        op(Op {
            summary: "Who the token belongs to, the agent's state and the latest event sequence number.",
            params: vec![],
            body: None,
            ok: ("200", ok_json("The principal.", r("Me"))),
            errors: &[401],
            public: false,
        }),
    );
    add(
        "/api/v1/calls",
        "get",
        op(Op {
            summary: "Live calls the token may see (an agent: calls offered to or held by them).",
            params: vec![],
            body: None,
            ok: (
                "200",
                ok_json(
                    "Calls.",
                    json!({ "type": "object", "required": ["calls"], "properties": { "calls": { "type": "array", "items": r("Call") } } }),
                ),
            ),
            errors: &[401],
            public: false,
        }),
    );
    add(
        "/api/v1/calls/{call_uri}",
        "get",
        op(Op {
            summary: "One call by URI.",
            params: vec![call_uri_param()],
            body: None,
            ok: ("200", ok_json("The call.", r("Call"))),
            errors: &[400, 401, 403, 404],
            public: false,
        }),
    );
    add(
        "/api/v1/calls/{call_uri}/answer",
        "post",
        op(Op {
            summary: "Answer an offered call in the browser (WHIP-style): POST the page's SDP offer, get the answer.",
            params: vec![call_uri_param()],
            body: Some(json!({ "required": true, "content": {
            "application/sdp": { "schema": { "type": "string" } },
            "application/json": { "schema": { "type": "object", "required": ["sdp"], "properties": { "sdp": { "type": "string" } } } } } })),
            ok: (
                "201",
                json!({ "description": "The SDP answer (as application/sdp, or JSON with call_uri, leg and sdp). Location: the call.",
            "headers": { "Location": { "schema": { "type": "string" } } },
            "content": { "application/sdp": { "schema": { "type": "string" } },
                         "application/json": { "schema": { "type": "object", "required": ["call_uri", "leg", "sdp"], "properties": {
                             "call_uri": { "type": "string" }, "leg": { "type": "string" }, "sdp": { "type": "string" } } } } } }),
            ),
            errors: &[400, 401, 403, 404, 409, 503],
            public: false,
        }),
    );
    add(
        "/api/v1/calls/{call_uri}/decline",
        "post",
        call_action("Decline an offered call (the next agent gets it)."),
    );
    add(
        "/api/v1/calls/{call_uri}/hangup",
        "post",
        call_action(
            "Hang up: ends the call; a consulted target leaves the consultation; the first agent during a transfer leaves it to complete.",
        ),
    );
    add(
        "/api/v1/calls/{call_uri}/hold",
        "post",
        call_action("Put the caller on hold."),
    );
    add(
        "/api/v1/calls/{call_uri}/resume",
        "post",
        call_action("Take the caller off hold."),
    );
    add(
        "/api/v1/calls/{call_uri}/mute",
        "post",
        call_action("Mute the agent toward the caller."),
    );
    add(
        "/api/v1/calls/{call_uri}/unmute",
        "post",
        call_action("Unmute the agent."),
    );
    add(
        "/api/v1/calls/{call_uri}/dtmf",
        "post",
        op(Op {
            summary: "Send DTMF digits toward the caller.",
            params: vec![call_uri_param()],
            body: Some(json_body(
                json!({ "type": "object", "required": ["digits"], "additionalProperties": false,
            "properties": { "digits": { "type": "string", "pattern": "^[0-9*#A-Da-d]{1,32}$" } } }),
            )),
            ok: ("200", ok_json("The call.", r("CallOrReleased"))),
            errors: &[400, 401, 403, 404, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/calls/{call_uri}/transfer",
        "post",
        op(Op {
            summary: "Transfer the call (blind or attended) to an agent, a queue, or an external target a route permits.",
            params: vec![call_uri_param()],
            body: Some(json_body(
                json!({ "type": "object", "required": ["target"], "additionalProperties": false,
            "properties": { "target": r("Party"), "kind": { "type": "string", "enum": ["blind", "attended"], "default": "blind" } } }),
            )),
            ok: (
                "202",
                ok_json(
                    "Accepted; progress follows as transfer.* events.",
                    r("CallOrReleased"),
                ),
            ),
            errors: &[400, 401, 403, 404, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/calls/{call_uri}/consult",
        "post",
        op(Op {
            summary: "Attended transfer: consult the target with the caller on hold.",
            params: vec![call_uri_param()],
            body: Some(json_body(
                json!({ "type": "object", "required": ["target"], "additionalProperties": false,
            "properties": { "target": r("Party") } }),
            )),
            ok: ("202", ok_json("Accepted.", r("CallOrReleased"))),
            errors: &[400, 401, 403, 404, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/calls/{call_uri}/transfer/complete",
        "post",
        call_action("Attended: connect the caller to the consulted target."),
    );
    add(
        "/api/v1/calls/{call_uri}/transfer/cancel",
        "post",
        call_action("Cancel the transfer; the caller returns to the agent."),
    );
    add(
        "/api/v1/transfer-targets",
        "get",
        op(Op {
            summary: "Targets the token may transfer to: agents with presence, queues, and the routes for external targets.",
            params: vec![],
            body: None,
            ok: (
                "200",
                ok_json(
                    "Targets.",
                    json!({ "type": "object", "required": ["targets"], "properties": { "targets": { "type": "array", "items": r("TargetOption") } } }),
                ),
            ),
            errors: &[401],
            public: false,
        }),
    );
    add(
        "/api/v1/agents",
        "get",
        op(Op {
            summary: "Every agent with presence.",
            params: vec![],
            body: None,
            ok: (
                "200",
                ok_json(
                    "Agents.",
                    json!({ "type": "object", "required": ["agents"], "properties": { "agents": { "type": "array", "items": r("Agent") } } }),
                ),
            ),
            errors: &[401],
            public: false,
        }),
    );
    add(
        "/api/v1/agents",
        "post",
        op(Op {
            summary: "Admin: add an agent.",
            params: vec![],
            body: Some(json_body(r("AgentConfig"))),
            ok: ("201", ok_json("The agent.", r("Agent"))),
            errors: &[400, 401, 403, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/agents/{agent_id}",
        "get",
        op(Op {
            summary: "One agent.",
            params: vec![agent_id()],
            body: None,
            ok: ("200", ok_json("The agent.", r("Agent"))),
            errors: &[401, 404],
            public: false,
        }),
    );
    add(
        "/api/v1/agents/{agent_id}",
        "put",
        op(Op {
            summary: "Admin: replace an agent's configuration.",
            params: vec![agent_id()],
            body: Some(json_body(r("AgentConfig"))),
            ok: ("200", ok_json("The agent.", r("Agent"))),
            errors: &[400, 401, 403, 404, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/agents/{agent_id}",
        "delete",
        op(Op {
            summary: "Admin: remove an agent (not while ringing or on a call).",
            params: vec![agent_id()],
            body: None,
            ok: ("204", json!({ "description": "Removed." })),
            errors: &[401, 403, 404, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/agents/{agent_id}/login",
        "post",
        op(Op {
            summary: "Log in (the agent itself or an admin), with an endpoint kind (browser, sip, phone, tdm).",
            params: vec![agent_id()],
            body: Some(
                json!({ "required": false, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false,
            "properties": { "endpoint": { "type": "string", "enum": ["browser", "sip", "phone", "tdm"] } } } } } }),
            ),
            ok: ("200", ok_json("The agent.", r("Agent"))),
            errors: &[400, 401, 403, 404, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/agents/{agent_id}/logout",
        "post",
        op(Op {
            summary: "Log out (a ringing offer goes to the next agent).",
            params: vec![agent_id()],
            body: None,
            ok: ("200", ok_json("The agent.", r("Agent"))),
            errors: &[401, 403, 404, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/agents/{agent_id}/presence",
        "put",
        op(Op {
            summary: "Set presence: available (also ends wrap-up) or away.",
            params: vec![agent_id()],
            body: Some(json_body(
                json!({ "type": "object", "required": ["presence"], "additionalProperties": false,
            "properties": { "presence": { "type": "string", "enum": ["available", "away"] }, "reason": { "type": "string" } } }),
            )),
            ok: ("200", ok_json("The agent.", r("Agent"))),
            errors: &[400, 401, 403, 404, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/queues",
        "get",
        op(Op {
            summary: "Every queue with waiting calls and staffing.",
            params: vec![],
            body: None,
            ok: (
                "200",
                ok_json(
                    "Queues.",
                    json!({ "type": "object", "required": ["queues"], "properties": { "queues": { "type": "array", "items": r("Queue") } } }),
                ),
            ),
            errors: &[401],
            public: false,
        }),
    );
    add(
        "/api/v1/queues",
        "post",
        op(Op {
            summary: "Admin: add a queue.",
            params: vec![],
            body: Some(json_body(r("QueueConfig"))),
            ok: ("201", ok_json("The queue.", r("Queue"))),
            errors: &[400, 401, 403, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/queues/{queue}",
        "get",
        op(Op {
            summary: "One queue.",
            params: vec![queue()],
            body: None,
            ok: ("200", ok_json("The queue.", r("Queue"))),
            errors: &[401, 404],
            public: false,
        }),
    );
    add(
        "/api/v1/queues/{queue}",
        "put",
        op(Op {
            summary: "Admin: replace a queue's configuration.",
            params: vec![queue()],
            body: Some(json_body(r("QueueConfig"))),
            ok: ("200", ok_json("The queue.", r("Queue"))),
            errors: &[400, 401, 403, 404],
            public: false,
        }),
    );
    add(
        "/api/v1/queues/{queue}",
        "delete",
        op(Op {
            summary: "Admin: remove an empty queue that nothing points at.",
            params: vec![queue()],
            body: None,
            ok: ("204", json!({ "description": "Removed." })),
            errors: &[401, 403, 404, 409],
            public: false,
        }),
    );
    add(
        "/api/v1/events",
        "get",
        op(Op {
            summary: "WebSocket event stream. Each text frame is one JSON event with `seq` and `type`; `heartbeat` frames carry the latest seq. Reconnect with `after=<last seq>` to get exactly what was missed; if those events aged out, an `error` frame with code `resume_failed` says to list calls again.",
            params: vec![
                json!({ "name": "after", "in": "query", "required": false, "description": "Resume after this sequence number.", "schema": { "type": "integer", "minimum": 0 } }),
                json!({ "name": "access_token", "in": "query", "required": false, "description": "The bearer token (browsers cannot set headers on WebSockets).", "schema": { "type": "string" } }),
            ],
            body: None,
            ok: (
                "101",
                json!({ "description": "Switching to the WebSocket protocol." }),
            ),
            errors: &[400, 401],
            public: false,
        }),
    );
    add(
        "/api/v1/click-to-call/destinations",
        "get",
        op(Op {
            summary: "Public: the destinations a web caller may choose.",
            params: vec![],
            body: None,
            ok: (
                "200",
                ok_json(
                    "Destinations.",
                    json!({ "type": "object", "required": ["destinations"], "properties": { "destinations": { "type": "array", "items": {
            "type": "object", "required": ["id", "label"], "properties": { "id": { "type": "string" }, "label": { "type": "string" } } } } } }),
                ),
            ),
            errors: &[],
            public: true,
        }),
    );
    add(
        "/api/v1/click-to-call",
        "post",
        op(Op {
            summary: "Public: start a web call (JSON form of WHIP).",
            params: vec![],
            body: Some(json_body(
                json!({ "type": "object", "required": ["destination", "sdp"], "additionalProperties": false,
            "properties": { "destination": { "type": "string" }, "sdp": { "type": "string" }, "caller": { "type": "string", "maxLength": 64 } } }),
            )),
            ok: (
                "201",
                json!({ "description": "The answer, the call's URI and the session resource (also in Location).",
            "headers": { "Location": { "schema": { "type": "string" } } },
            "content": { "application/json": { "schema": { "type": "object", "required": ["call_uri", "sdp", "resource"], "properties": {
                "call_uri": { "type": "string" }, "sdp": { "type": "string" }, "resource": { "type": "string" } } } } } }),
            ),
            errors: &[400, 404, 503],
            public: true,
        }),
    );
    add(
        "/api/v1/whip",
        "post",
        op(Op {
            summary: "Public, WHIP-style: POST an SDP offer (application/sdp) with ?destination=; 201 with the answer, Location (DELETE it to hang up) and X-Call-Uri.",
            params: vec![
                json!({ "name": "destination", "in": "query", "required": true, "schema": { "type": "string" } }),
                json!({ "name": "caller", "in": "query", "required": false, "schema": { "type": "string", "maxLength": 64 } }),
            ],
            body: Some(
                json!({ "required": true, "content": { "application/sdp": { "schema": { "type": "string" } } } }),
            ),
            ok: (
                "201",
                json!({ "description": "The SDP answer.",
            "headers": { "Location": { "schema": { "type": "string" } }, "X-Call-Uri": { "schema": { "type": "string" } } },
            "content": { "application/sdp": { "schema": { "type": "string" } } } }),
            ),
            errors: &[400, 404, 503],
            public: true,
        }),
    );
    add(
        "/api/v1/whip/{session}",
        "get",
        op(Op {
            summary: "Public (by session capability): the web call's state.",
            params: vec![session()],
            body: None,
            ok: (
                "200",
                ok_json(
                    "State.",
                    json!({ "type": "object", "required": ["call_uri", "state"], "properties": {
            "call_uri": { "type": "string" }, "state": { "type": "string" }, "queue": { "type": ["string", "null"] },
            "position": { "type": ["integer", "null"] }, "expected_wait_s": { "type": ["integer", "null"] }, "agent": { "type": ["string", "null"] } } }),
                ),
            ),
            errors: &[404],
            public: true,
        }),
    );
    add(
        "/api/v1/whip/{session}",
        "delete",
        op(Op {
            summary: "Public (by session capability): hang up.",
            params: vec![session()],
            body: None,
            ok: ("204", json!({ "description": "Hung up." })),
            errors: &[404],
            public: true,
        }),
    );

    let party = json!({ "description": "A transfer target: exactly one key.", "oneOf": [
        { "type": "object", "required": ["agent"], "additionalProperties": false, "properties": { "agent": { "type": "string" } } },
        { "type": "object", "required": ["queue"], "additionalProperties": false, "properties": { "queue": { "type": "string" } } },
        { "type": "object", "required": ["sip_uri"], "additionalProperties": false, "properties": { "sip_uri": { "type": "string" } } },
        { "type": "object", "required": ["tdm_number"], "additionalProperties": false, "properties": { "tdm_number": { "type": "string" } } } ] });
    let presence = json!({ "type": "string", "enum": ["offline", "available", "ringing", "busy", "wrap_up", "away"] });
    let endpoint = json!({ "type": "object", "required": ["kind"], "properties": {
        "kind": { "type": "string", "enum": ["browser", "sip", "phone", "tdm"] }, "uri": { "type": "string" }, "user": { "type": "string" }, "number": { "type": "string" }, "group": { "type": "string" } } });
    let nstr = json!({ "type": ["string", "null"] });
    let history = json!({ "type": "object", "required": ["at_ms", "to", "kind", "outcome"], "properties": {
        "at_ms": { "type": "integer" }, "from": nstr, "to": r("Party"), "kind": { "type": "string" }, "outcome": { "type": "string" } } });
    let call = json!({ "type": "object", "required": ["call_uri", "caller", "caller_kind", "state", "held", "muted", "transfer_history", "age_ms"], "properties": {
        "call_uri": { "type": "string" }, "caller": { "type": "string" }, "caller_kind": { "type": "string", "enum": ["web_rtc", "sip", "tdm"] },
        "state": { "type": "string", "enum": ["queued", "offered", "connected", "held", "transferring", "consulting", "external", "routing"] },
        "agent": nstr, "offered_to": { "type": "array", "items": { "type": "string" } }, "queue": nstr,
        "position": { "type": ["integer", "null"] }, "expected_wait_s": { "type": ["integer", "null"] },
        "held": { "type": "boolean" }, "muted": { "type": "boolean" },
        "transfer": { "oneOf": [ { "type": "null" }, { "type": "object", "properties": {
            "target": r("Party"), "kind": { "type": "string" }, "state": {}, "from": nstr, "target_agent": nstr } } ] },
        "transfer_history": { "type": "array", "items": r("HistoryEntry") }, "age_ms": { "type": "integer" } } });
    let agent = json!({ "type": "object", "required": ["id", "name", "skills", "presence", "endpoints"], "properties": {
        "id": { "type": "string" }, "name": { "type": "string" }, "skills": { "type": "array", "items": { "type": "string" } },
        "presence": r("Presence"), "endpoint": nstr, "endpoints": { "type": "array", "items": r("Endpoint") },
        "call_uri": nstr, "idle_ms": { "type": ["integer", "null"] }, "away_reason": nstr, "wrap_up_left_ms": { "type": ["integer", "null"] } } });
    let agent_config = json!({ "type": "object", "required": ["id", "name", "endpoints", "token"], "additionalProperties": false, "properties": {
        "id": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" }, "name": { "type": "string" },
        "skills": { "type": "array", "items": { "type": "string" } },
        "endpoints": { "type": "array", "minItems": 1, "items": r("Endpoint") }, "token": { "type": "string", "minLength": 8 } } });
    let queue_config = json!({ "type": "object", "required": ["name"], "additionalProperties": false, "properties": {
        "name": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" }, "skill": nstr,
        "ring_timeout_ms": { "type": "integer", "minimum": 1 }, "max_wait_ms": { "type": "integer", "minimum": 0 },
        "overflow": { "oneOf": [ { "type": "null" }, r("Party") ] }, "wrap_up_ms": { "type": ["integer", "null"] },
        "comfort": { "type": "object", "required": ["kind"], "properties": { "kind": { "type": "string", "enum": ["tone", "music"] }, "file": { "type": "string" } } },
        "away_on_no_answer": { "type": "boolean" } } });
    let mut queue = queue_config.clone();
    queue["additionalProperties"] = json!(true);
    queue["required"] = json!(["name", "waiting", "available_agents", "staffed_agents"]);
    queue["properties"]["waiting"] = json!({ "type": "array", "items": { "type": "string" } });
    queue["properties"]["available_agents"] = json!({ "type": "integer" });
    queue["properties"]["staffed_agents"] = json!({ "type": "integer" });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "spanbridge control-actions API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Calls keyed by URI (urn:uuid), agents and queues, transfers (blind and attended) and the event stream of the spanbridge gateway. Errors are JSON {error: {status, code, message}}."
        },
        "servers": [ { "url": "/" } ],
        "security": [ { "bearer": [] } ],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["status", "code", "message"], "properties": {
                    "status": { "type": "integer" }, "code": { "type": "string", "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "conflict", "unavailable"] },
                    "message": { "type": "string" } } } } },
                "Party": party,
                "Presence": presence,
                "Endpoint": endpoint,
                "HistoryEntry": history,
                "Call": call,
                "CallOrReleased": { "oneOf": [ r("Call"), { "type": "object", "required": ["call_uri", "state"], "properties": { "call_uri": { "type": "string" }, "state": { "const": "released" } } } ] },
                "Agent": agent,
                "AgentConfig": agent_config,
                "Queue": queue,
                "QueueConfig": queue_config,
                "TargetOption": { "type": "object", "required": ["label"], "properties": {
                    "target": { "oneOf": [ { "type": "null" }, r("Party") ] }, "label": { "type": "string" },
                    "presence": { "oneOf": [ { "type": "null" }, r("Presence") ] }, "route": {} } },
                "Me": { "type": "object", "required": ["principal", "latest_seq"], "properties": {
                    "principal": { "type": "object", "required": ["role"], "properties": { "role": { "type": "string", "enum": ["admin", "supervisor", "agent"] }, "agent": { "type": "string" } } },
                    "agent": { "oneOf": [ { "type": "null" }, r("Agent") ] }, "latest_seq": { "type": "integer" } } }
            }
        }
    })
}
