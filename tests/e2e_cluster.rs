//! Cluster mode so far (issue 15): a node started with `OPENCHAT_CLUSTER_NATS_URL` connects to
//! a real, private nats-server with JetStream, takes the default community's lease, says so on
//! `/metrics`, turns `/readyz` to 503 `cluster_unavailable` while the bus is down (liveness and
//! local writes go on) and ready again once it is back, and releases its lease when it stops so
//! another node takes over at once instead of after the 15 s TTL. Two nodes share one Postgres
//! database, as the cluster requires.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use simd_json::json;
use support::api::Client;
use support::nats::NatsServer;
use support::server::{COMMUNITY_VARS, Engine, Place, TestServer, config_for, start_in};

const TICKET_SECRET: &str = "cluster-ticket-secret-0123456789abcdef";
const TURN_SECRET: &str = "cluster-turn-secret-0123456789abcdef";

fn node(place: Place, url: &str, nats: &NatsServer, node_id: &str) -> TestServer {
    node_with(place, url, nats, node_id, &[])
}

/// A cluster node of the community test configuration, with `extra` variables on top.
fn node_with(
    place: Place,
    url: &str,
    nats: &NatsServer,
    node_id: &str,
    extra: &[(&str, &str)],
) -> TestServer {
    let nats_url = nats.url();
    let mut vars: Vec<(&str, &str)> = COMMUNITY_VARS.to_vec();
    vars.extend_from_slice(&[
        ("OPENCHAT_CLUSTER_NATS_URL", nats_url.as_str()),
        ("OPENCHAT_NODE_ID", node_id),
        ("OPENCHAT_CLUSTER_NAME", "e2e"),
        ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
        ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
        ("OPENCHAT_RTC_TURN_SECRET", TURN_SECRET),
    ]);
    vars.extend_from_slice(extra);
    start_in(place, Some(url), &vars, |_| {})
}

/// The value of an unlabelled series on `/metrics`.
fn gauge(addr: SocketAddr, name: &str) -> Option<u64> {
    Client::anonymous(addr)
        .get("/metrics")
        .text()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `check` every 20 ms until it holds, at most `limit`; how long it took.
fn within(limit: Duration, what: &str, check: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn readyz(addr: SocketAddr) -> (u16, String) {
    let reply = Client::anonymous(addr).get("/readyz");
    (reply.status, reply.text())
}

#[test]
fn nodes_hold_the_lease_follow_the_bus_and_hand_over_on_stop() {
    let mut nats = NatsServer::start();
    let place = Place::new(Engine::Postgres);
    let url = place.db.as_ref().unwrap().url();
    let n1 = node(place, &url, &nats, "n1");
    within(
        Duration::from_secs(5),
        "n1 holds the default community's lease",
        || gauge(n1.addr, "openchat_cluster_leases_held") == Some(1),
    );
    assert_eq!(gauge(n1.addr, "openchat_cluster_bus_connected"), Some(1));
    assert_eq!(readyz(n1.addr).0, 200);

    // A second node on the same database: the lease stays with n1.
    let n2 = node(Place::new(Engine::Sqlite), &url, &nats, "n2");
    assert_eq!(readyz(n2.addr).0, 200);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        gauge(n2.addr, "openchat_cluster_leases_held"),
        Some(0),
        "one owner"
    );
    assert_eq!(gauge(n1.addr, "openchat_cluster_leases_held"), Some(1));

    // The bus goes away: not ready within 3 s, alive, and local writes still commit.
    nats.kill();
    for (name, addr) in [("n1", n1.addr), ("n2", n2.addr)] {
        let took = within(Duration::from_secs(3), &format!("{name} not ready"), || {
            readyz(addr).0 == 503
        });
        let (_, body) = readyz(addr);
        assert!(body.contains("\"code\":\"cluster_unavailable\""), "{body}");
        assert!(body.contains("\"retryable\":true"), "{body}");
        assert_eq!(Client::anonymous(addr).get("/healthz").status, 200);
        assert_eq!(gauge(addr, "openchat_cluster_bus_connected"), Some(0));
        eprintln!("{name}: not ready {took:?} after the bus died");
    }
    let user = Client::user(n1.addr);
    let general = user.first_text_channel("home");
    let posted = user.post(
        &format!("/v1/channels/{general}/messages"),
        &json!({"body": "while the bus is down"}),
    );
    assert_eq!(posted.status, 201, "{}", posted.text());

    // The bus comes back: ready again.
    nats.restart();
    for addr in [n1.addr, n2.addr] {
        within(Duration::from_secs(15), "ready again", || {
            readyz(addr).0 == 200
        });
    }

    // n1 stops: it releases its lease and n2 takes it at once, not after the 15 s TTL.
    let stopped = Instant::now();
    drop(n1.stop());
    let took = within(Duration::from_secs(5), "n2 takes the lease", || {
        gauge(n2.addr, "openchat_cluster_leases_held") == Some(1)
    });
    eprintln!(
        "takeover {took:?} after n1 stopped ({:?} since the stop began)",
        stopped.elapsed()
    );
}

#[test]
fn a_cluster_node_without_its_bus_does_not_start() {
    let place = Place::new(Engine::Postgres);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nats_url = format!("nats://{dead}");
    let config = config_for(
        &place,
        None,
        &[
            ("OPENCHAT_CLUSTER_NATS_URL", nats_url.as_str()),
            ("OPENCHAT_NODE_ID", "lonely"),
            ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
            ("OPENCHAT_RTC_TURN_SECRET", TURN_SECRET),
        ],
    );
    let started = Instant::now();
    let error = match openchatd::server::Server::start(config) {
        Ok(_) => panic!("started without its bus"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("OPENCHAT_CLUSTER_NATS_URL"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// A join ticket is single-use across the cluster: used on n1, it is refused on n2 as
/// replayed (n2 never saw it: only the cluster's bucket knows); a fresh ticket from n1 joins on
/// n2; and a replay on the node that took it is refused too.
#[test]
fn a_ticket_used_on_one_node_is_refused_on_another() {
    let nats = NatsServer::start();
    let place = Place::new(Engine::Postgres);
    let url = place.db.as_ref().unwrap().url();
    let n1 = node(place, &url, &nats, "t1");
    let n2 = node(Place::new(Engine::Sqlite), &url, &nats, "t2");
    let alice = Client::user(n1.addr);
    let voice = support::call::voice_channel(&alice, "home");
    let join = |addr: SocketAddr, ticket: &str| {
        let mut ws = support::ws::Ws::connect_to(addr, "/v1/rtc/signaling");
        ws.send_text(&support::json::encode(
            &json!({"type": "rtc.join", "request_id": "j", "payload": {"ticket": ticket}}),
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if ws
                .wait_for("rtc.joined", Duration::from_millis(50), |_| true)
                .is_some()
            {
                return ("rtc.joined".to_owned(), None, ws);
            }
            if let Some(error) = ws.wait_for("rtc.error", Duration::from_millis(50), |_| true) {
                use support::json::JsonPath;
                let code = error.str_at("payload.code").to_owned();
                return ("rtc.error".to_owned(), Some(code), ws);
            }
            assert!(Instant::now() < deadline, "no answer to rtc.join");
        }
    };
    let ticket = support::call::ticket_for(&alice, &voice);
    let (kind, _, _first) = join(n1.addr, &ticket);
    assert_eq!(kind, "rtc.joined");
    let (kind, code, _) = join(n2.addr, &ticket);
    assert_eq!(
        (kind.as_str(), code.as_deref()),
        ("rtc.error", Some("rtc_ticket_replayed"))
    );
    let (kind, code, _) = join(n1.addr, &ticket);
    assert_eq!(
        (kind.as_str(), code.as_deref()),
        ("rtc.error", Some("rtc_ticket_replayed"))
    );
    let fresh = support::call::ticket_for(&alice, &voice);
    let (kind, code, _) = join(n2.addr, &fresh);
    assert_eq!(
        kind, "rtc.joined",
        "a fresh ticket of n1 joins on n2: {code:?}"
    );
}

/// A session revoked on one node is honoured on the others within a second: n2 knows the
/// session (it loaded it at its start), n1 revokes it, and n2 refuses the token and closes the
/// realtime socket opened with it.
#[test]
fn a_revoke_on_one_node_is_honoured_on_another_within_a_second() {
    let nats = NatsServer::start();
    let place = Place::new(Engine::Postgres);
    let url = place.db.as_ref().unwrap().url();
    let session_mode = |place: Place, id: &str| {
        node_with(place, &url, &nats, id, &[("OPENCHAT_AUTH_MODE", "session")])
    };
    let n1 = session_mode(place, "r1");
    let key = support::api::DeviceKey::new();
    let session = key.sign_in(n1.addr, support::server::PUBLIC_BASE_URL, None);
    use support::json::JsonPath;
    let token = session.str_at("token").to_owned();
    let n2 = session_mode(Place::new(Engine::Sqlite), "r2");
    assert_eq!(
        Client::bearer(n2.addr, &token)
            .get("/v1/auth/session")
            .status,
        200
    );
    let mut ws = support::ws::Ws::connect_with_protocol(
        n2.addr,
        "server_id=home",
        &format!("openchat.session.{token}"),
    );
    let general = Client::bearer(n2.addr, &token).first_text_channel("home");
    ws.subscribe(&general);
    ws.expect("chat.presence.snapshot");

    let revoked = Instant::now();
    let reply = Client::bearer(n1.addr, &token).delete("/v1/auth/session");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let took = within(
        Duration::from_secs(1),
        "n2 refuses the revoked token",
        || {
            Client::bearer(n2.addr, &token)
                .get("/v1/auth/session")
                .status
                == 401
        },
    );
    assert!(
        ws.closed_within(Duration::from_secs(1)),
        "n2 closed the token's socket"
    );
    eprintln!(
        "revoke on n1 → refused on n2 in {took:?} ({:?} with the DELETE)",
        revoked.elapsed()
    );
}
