//! Prometheus text for the TDM spans, appended to the gateway's `/metrics`
//! ([`crate::web`]) when TDM legs run. Everything comes from one [`TdmStatus`] snapshot of the
//! provider's own state (asked of its task, never of a span thread):
//!
//! - `gateway_tdm_channels{span,state}`: channels `idle`, `busy` or `blocked`;
//! - `gateway_tdm_span_calls_total{span,direction}`: calls `in` and `out` on the span;
//! - `gateway_tdm_span_alarm{span}`: 1 while DAHDI reports an alarm (RED, YELLOW, ...), else
//!   0 (no sample while the alarm state cannot be read);
//! - `gateway_tdm_span_alarm_info{span,alarms}`: 1, labelled with the alarms as DAHDI names
//!   them (`OK`, `RED`, `YELLOW+LOS`);
//! - `gateway_tdm_dchannel_up{span}` (PRI spans only): Q.921 multiple-frame operation;
//! - `gateway_tdm_dchannel_ready{span}` (PRI spans only): calls are taken;
//! - `gateway_tdm_legs_active`: live TDM legs.

use std::fmt::Write;

use super::provider::TdmStatus;

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
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

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends the TDM metric families of `status` to `out`.
pub fn render(status: &TdmStatus, out: &mut String) {
    let mut channels = Vec::new();
    let mut calls = Vec::new();
    let mut alarm = Vec::new();
    let mut alarm_info = Vec::new();
    let mut dchannel_up = Vec::new();
    let mut dchannel_ready = Vec::new();
    for s in &status.spans {
        let n = s.span;
        for state in ["idle", "busy", "blocked"] {
            let count = s.channels.iter().filter(|c| c.state == state).count();
            channels.push((format!("span=\"{n}\",state=\"{state}\""), count as f64));
        }
        calls.push((format!("span=\"{n}\",direction=\"in\""), s.calls_in as f64));
        calls.push((
            format!("span=\"{n}\",direction=\"out\""),
            s.calls_out as f64,
        ));
        if s.alarms != "?" {
            let on = if s.alarms == "OK" { 0.0 } else { 1.0 };
            alarm.push((format!("span=\"{n}\""), on));
        }
        alarm_info.push((format!("span=\"{n}\",alarms=\"{}\"", label(&s.alarms)), 1.0));
        if let Some(d) = &s.dchannel {
            let up = if d.link == "up" { 1.0 } else { 0.0 };
            dchannel_up.push((format!("span=\"{n}\""), up));
            let ready = if d.ready { 1.0 } else { 0.0 };
            dchannel_ready.push((format!("span=\"{n}\""), ready));
        }
    }
    family(
        out,
        "gateway_tdm_channels",
        "gauge",
        "TDM channels by state (idle, busy, blocked).",
        &channels,
    );
    family(
        out,
        "gateway_tdm_span_calls_total",
        "counter",
        "Calls on each span, by direction.",
        &calls,
    );
    family(
        out,
        "gateway_tdm_span_alarm",
        "gauge",
        "1 while the span reports an alarm.",
        &alarm,
    );
    family(
        out,
        "gateway_tdm_span_alarm_info",
        "gauge",
        "The span's alarms as DAHDI names them.",
        &alarm_info,
    );
    if !dchannel_up.is_empty() {
        family(
            out,
            "gateway_tdm_dchannel_up",
            "gauge",
            "1 while the PRI span's D-channel is in multiple-frame operation.",
            &dchannel_up,
        );
        family(
            out,
            "gateway_tdm_dchannel_ready",
            "gauge",
            "1 while the PRI span takes calls (link up, no alarm, no RESTART outstanding).",
            &dchannel_ready,
        );
    }
    family(
        out,
        "gateway_tdm_legs_active",
        "gauge",
        "Live TDM legs.",
        &[(String::new(), status.legs as f64)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdm::provider::{ChannelStatus, DChannelStatus, SpanReport};

    #[test]
    fn spans_render_their_channels_calls_alarm_and_dchannel() {
        let st = TdmStatus {
            spans: vec![SpanReport {
                span: 2,
                signalling: "pri_cpe",
                calls_in: 3,
                calls_out: 1,
                alarms: "RED".into(),
                running: true,
                dchannel: Some(DChannelStatus {
                    role: "user",
                    link: "down",
                    state: "TeiAssigned".into(),
                    tei: 0,
                    ready: false,
                    calls: 0,
                    frames_in: 0,
                    frames_out: 0,
                    bad_fcs: 0,
                }),
                channels: vec![
                    ChannelStatus {
                        channel: 1,
                        state: "busy",
                        leg: Some("leg-4".into()),
                        glares: 0,
                        tones: 0,
                    },
                    ChannelStatus {
                        channel: 2,
                        state: "idle",
                        leg: None,
                        glares: 0,
                        tones: 0,
                    },
                ],
            }],
            legs: 1,
        };
        let mut out = String::new();
        render(&st, &mut out);
        for want in [
            "gateway_tdm_channels{span=\"2\",state=\"busy\"} 1\n",
            "gateway_tdm_channels{span=\"2\",state=\"idle\"} 1\n",
            "gateway_tdm_channels{span=\"2\",state=\"blocked\"} 0\n",
            "gateway_tdm_span_calls_total{span=\"2\",direction=\"in\"} 3\n",
            "gateway_tdm_span_calls_total{span=\"2\",direction=\"out\"} 1\n",
            "gateway_tdm_span_alarm{span=\"2\"} 1\n",
            "gateway_tdm_span_alarm_info{span=\"2\",alarms=\"RED\"} 1\n",
            "gateway_tdm_dchannel_up{span=\"2\"} 0\n",
            "gateway_tdm_legs_active 1\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }
}
