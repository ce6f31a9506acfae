//! Real peers: the gateway (the same server the binary runs, configured from TOML) against
//! Kamailio 5.6 as a digest-checking registrar and as an OPTIONS-answering trunk.
//!
//! - `register = true` on a trunk: the gateway REGISTERs, answers Kamailio's 401 (qop=auth),
//!   and refreshes before the short (10 s) binding expires, on the wall clock.
//! - `keepalive_s` on a trunk: OPTIONS pings reach Kamailio; when it is stopped the trunk is
//!   marked down and calls skip it (straight to the next destination of the route), when it is
//!   back the trunk is up again and calls go to it first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Sipp, free_udp_port};
use gateway::calls::plane_media::PlaneMedia;
use gateway::calls::server::{GatewayServer, ServerOptions};
use gateway::config::Config;
use gateway::media::plane::{Country, MediaPlane, PlaneConfig};
use gateway::sip::registration::RegistrationState;
use gateway::sip::transaction::TimerConfig;
use support::kamailio::{Kamailio, KamailioOptions};

fn timers() -> TimerConfig {
    TimerConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
        timer_d: Duration::from_secs(1),
        ..TimerConfig::default()
    }
}

async fn gateway(toml_tail: &str) -> GatewayServer {
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[sip]
udp = "127.0.0.1:0"
trusted = ["127.0.0.0/8"]

{toml_tail}
"#
    );
    let config = Config::from_toml(&text, "test").unwrap();
    let plane = MediaPlane::start(PlaneConfig {
        workers: 1,
        ..PlaneConfig::default()
    })
    .unwrap();
    GatewayServer::start(
        ServerOptions {
            config,
            timers: Some(timers()),
            seed: None,
            external: Vec::new(),
        },
        Box::new(PlaneMedia::new(
            plane,
            Duration::from_secs(30),
            Country::Etsi,
        )),
    )
    .await
    .unwrap()
}

fn kamailio(port: u16, invite_status: u16) -> Kamailio {
    Kamailio::start(&KamailioOptions {
        port,
        password: "reg-secret".into(),
        min_expires: 5,
        invite_status,
    })
}

async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, t0.elapsed());
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_registers_to_kamailio_with_digest_and_refreshes_before_expiry() {
    let k = kamailio(free_udp_port(), 503);
    let gw = gateway(&format!(
        r#"
[[trunk]]
name = "registrar"
address = "{}"
username = "gw-reg"
password = "reg-secret"
register = true
register_expires_s = 10
"#,
        k.addr
    ))
    .await;
    let t0 = Instant::now();
    // The first binding, then one refresh: with a 10 s lifetime the refresh is due at 5 s.
    let (_, took) = wait_for(
        "two bindings accepted by Kamailio",
        Duration::from_secs(12),
        || (k.handled("REGISTERED").len() >= 2).then_some(()),
    )
    .await;
    let accepted = k.handled("REGISTERED");
    let challenged = k.handled("CHALLENGE");
    eprintln!("after {took:?}: {accepted:#?}\nchallenges: {challenged:#?}");
    // Each REGISTER went out without credentials first and was challenged once.
    assert!(!challenged.is_empty(), "Kamailio challenged");
    for l in &accepted {
        assert_eq!(field(l, "user"), "gw-reg", "{l}");
        assert_eq!(field(l, "expires"), "10", "{l}");
        assert!(field(l, "contact").contains("gw-reg@127.0.0.1:"), "{l}");
    }
    // One Call-ID for the binding's life, CSeq increasing (RFC 3261 §10.2.4).
    assert_eq!(field(&accepted[0], "ci"), field(&accepted[1], "ci"));
    let cseq = |l: &str| field(l, "cseq").parse::<u32>().unwrap();
    assert!(cseq(&accepted[1]) > cseq(&accepted[0]));
    // The refresh came before the first binding lapsed (10 s after it was granted), and not
    // right away either.
    assert!(
        took < Duration::from_secs(10),
        "refresh after {took:?} (binding lifetime 10 s)"
    );
    assert!(
        took > Duration::from_secs(3),
        "refresh already after {took:?}"
    );
    let regs = gw
        .handle()
        .run(|sw, now| sw.sip.registrations(now))
        .await
        .unwrap();
    assert_eq!(regs.len(), 1);
    let r = &regs[0];
    assert_eq!(r.peer, "registrar");
    assert_eq!(r.state, RegistrationState::Registered);
    assert!(r.registered);
    assert_eq!(r.last_status, Some(200));
    assert!(r.accepted >= 2, "{r:?}");
    assert_eq!(r.granted, Some(Duration::from_secs(10)));
    // Operators see it in /metrics.
    let text = metrics(&gw).await;
    assert!(
        text.contains("gateway_trunk_registered{trunk=\"registrar\"} 1"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("gateway_trunk_registrations_total{trunk=\"registrar\"}"))
        .unwrap_or_else(|| panic!("no registrations counter: {text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 2.0, "{line}");
    eprintln!("whole test {:?}", t0.elapsed());
    gw.shutdown().await.unwrap();
}

/// GET /metrics from the core router on the running switch.
async fn metrics(gw: &GatewayServer) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = gateway::web::router_with(gateway::web::WebState {
        switch: Some(gw.handle()),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    server.abort();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_the_registration_without_a_loop() {
    let k = kamailio(free_udp_port(), 503);
    let gw = gateway(&format!(
        r#"
[[trunk]]
name = "registrar"
address = "{}"
username = "gw-reg"
password = "wrong"
register = true
register_expires_s = 10
"#,
        k.addr
    ))
    .await;
    let h = gw.handle();
    let mut last = None;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        let regs = h.run(|sw, now| sw.sip.registrations(now)).await.unwrap();
        if regs
            .first()
            .is_some_and(|r| r.state == RegistrationState::Failed)
        {
            last = regs.first().cloned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = last.expect("registration failed within 5 s");
    assert!(!r.registered);
    assert_eq!(r.accepted, 0);
    // One unauthenticated REGISTER and one with our (wrong) answer, both challenged: the
    // client does not retry the same credentials in a loop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(k.handled("REGISTERED").len(), 0);
    assert_eq!(k.handled("CHALLENGE").len(), 2, "{:#?}", k.log());
    gw.shutdown().await.unwrap();
}

async fn trunk_up(gw: &GatewayServer, name: &'static str) -> Option<bool> {
    gw.handle()
        .run(move |sw, _| sw.engine.stats().trunks.get(name).and_then(|t| t.up))
        .await
        .unwrap()
}

async fn one_call(gw: &GatewayServer) {
    let uac = Sipp::start(
        "calls_uac_wait_bye.xml",
        gw.sip_udp_addr(),
        1,
        &["-s", "bob", "-mp", &free_udp_port().to_string()],
    );
    let (code, ok, failed, err) = uac.finish().await;
    assert_eq!((code, ok, failed), (Some(0), 1, 0), "caller: {err}");
}

/// Trunk `primary` (Kamailio, pinged every second, answers INVITE 503) and `backup` (SIPp
/// UAS); the route tries primary first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_keepalive_marks_a_stopped_kamailio_down_and_routing_skips_it_until_it_is_back() {
    let t0 = Instant::now();
    let port = free_udp_port();
    let mut k = kamailio(port, 503);
    let backup = Sipp::start("calls_uas_bye.xml", None, 3, &[]);
    let backup_addr: SocketAddr = backup.addr;
    let gw = gateway(&format!(
        r#"
[[trunk]]
name = "primary"
address = "{}"
keepalive_s = 1

[[trunk]]
name = "backup"
address = "{backup_addr}"

[[route]]
name = "bob"
match = "bob"
to = ["trunk:primary", "trunk:backup"]
"#,
        k.addr
    ))
    .await;
    let mut took = None;
    while t0.elapsed() < Duration::from_secs(8) {
        if trunk_up(&gw, "primary").await == Some(true) {
            took = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = took.expect("primary up within 8 s");
    eprintln!("primary up after {took:?}");
    assert!(!k.handled("OPTIONS").is_empty(), "Kamailio saw our OPTIONS");

    // Up: the call tries Kamailio first (503), then fails over to the backup.
    one_call(&gw).await;
    assert_eq!(k.handled("INVITE").len(), 1, "the first call tried primary");

    // Stopped: the pings time out (64*T1 = 3.2 s) and the trunk is marked down.
    k.stop();
    let stopped = Instant::now();
    let mut down = None;
    while stopped.elapsed() < Duration::from_secs(8) {
        if trunk_up(&gw, "primary").await == Some(false) {
            down = Some(stopped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let down = down.expect("primary marked down within 8 s of Kamailio stopping");
    eprintln!("primary down {down:?} after Kamailio stopped");
    // Down: the call goes straight to the backup (nothing could answer at primary now, and
    // a try would cost the caller Timer B).
    let call = Instant::now();
    one_call(&gw).await;
    assert!(
        call.elapsed() < Duration::from_secs(3),
        "the call waited for the dead trunk: {:?}",
        call.elapsed()
    );

    // Back on the same port: up again at the next answered ping, and calls try it first.
    let k2 = kamailio(port, 503);
    let back = Instant::now();
    let mut up = None;
    while back.elapsed() < Duration::from_secs(6) {
        if trunk_up(&gw, "primary").await == Some(true) {
            up = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let up = up.expect("primary up again within 6 s of Kamailio's restart");
    eprintln!("primary up {up:?} after Kamailio restarted");
    assert!(!k2.handled("OPTIONS").is_empty());
    one_call(&gw).await;
    assert_eq!(
        k2.handled("INVITE").len(),
        1,
        "the third call tried primary again"
    );
    let (code, ok, failed, err) = backup.finish().await;
    assert_eq!((code, ok, failed), (Some(0), 3, 0), "backup: {err}");
    let stats = gw
        .handle()
        .run(|sw, _| sw.engine.stats().clone())
        .await
        .unwrap();
    assert_eq!(stats.trunks["backup"].answered, 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.counters().idle() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.counters().idle(), "gateway idle after the calls");
    gw.shutdown().await.unwrap();
    eprintln!("whole test {:?}", t0.elapsed());
}
