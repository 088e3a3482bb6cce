//! Lease-based ownership over NATS KV (issue 15, first piece) against a real, private
//! `nats-server -js` per test on a free loopback port: claims, renewals, races, expiry of a
//! holder that stopped, release, stale revisions, and the keeper with its view. The leases run
//! on a 3 s TTL (the production proportions scaled down) so an expiry takes seconds.

mod support;

use std::time::{Duration, Instant};

use openchatd::cluster::lease::{Action, ClaimOutcome, Lease};
use openchatd::cluster::{ClusterError, LeaseKeeper, LeaseKey, LeaseStore, LeaseTiming, LeaseView};
use support::nats::NatsServer;

/// The test TTL: long enough for loopback round trips, short enough to wait for.
const TEST_TTL: Duration = Duration::from_secs(3);
const CLUSTER: &str = "test";

fn timing() -> LeaseTiming {
    LeaseTiming::scaled(TEST_TTL).expect("scaled timing")
}

/// The lease stores of the test nodes on a private server.
trait Stores {
    async fn store(&self, node: &str) -> LeaseStore;
    async fn store_with(&self, node: &str, timing: LeaseTiming)
    -> Result<LeaseStore, ClusterError>;
}

impl Stores for NatsServer {
    /// The lease store of `node` on this server (its own connection), with the test TTL.
    async fn store(&self, node: &str) -> LeaseStore {
        self.store_with(node, timing()).await.expect("lease store")
    }

    async fn store_with(
        &self,
        node: &str,
        timing: LeaseTiming,
    ) -> Result<LeaseStore, ClusterError> {
        let client = async_nats::connect(self.url())
            .await
            .expect("connect to nats-server");
        LeaseStore::open(client, CLUSTER, node, timing).await
    }
}

fn community(id: &str) -> LeaseKey {
    LeaseKey::community(id).expect("valid id")
}

/// Polls `check` every 10 ms until it gives `Some`, at most `limit`.
async fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn claim_then_renew_keeps_the_lease_with_rising_revisions() {
    let nats = NatsServer::start();
    let a = nats.store("node-a").await;
    let key = community("c1");
    let first = a.claim(&key).await.unwrap().expect("a free key is created");
    assert_eq!(
        a.owner(&key).await.unwrap(),
        Some(("node-a".to_owned(), first))
    );
    let mut revision = first;
    for _ in 0..5 {
        let next = a
            .renew(&key, revision)
            .await
            .unwrap()
            .expect("our own revision");
        assert!(next > revision, "{next} after {revision}");
        revision = next;
    }
    assert_eq!(
        a.owner(&key).await.unwrap(),
        Some(("node-a".to_owned(), revision))
    );
    // Revisions are the bucket's sequence: another key's write moves them on too.
    let other = a.claim(&community("c2")).await.unwrap().unwrap();
    assert!(other > revision);
    assert!(a.renew(&key, revision).await.unwrap().unwrap() > other);
}

#[tokio::test]
async fn a_second_nodes_claim_of_a_held_key_fails() {
    let nats = NatsServer::start();
    let (a, b) = (nats.store("node-a").await, nats.store("node-b").await);
    let key = community("c1");
    let revision = a.claim(&key).await.unwrap().unwrap();
    assert_eq!(b.claim(&key).await.unwrap(), None);
    assert_eq!(
        a.claim(&key).await.unwrap(),
        None,
        "a held key is held, also for its holder"
    );
    assert_eq!(
        b.owner(&key).await.unwrap(),
        Some(("node-a".to_owned(), revision))
    );
    assert_eq!(b.owner(&community("nobody")).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_key_have_exactly_one_winner_each_round() {
    let nats = NatsServer::start();
    let (a, b) = (nats.store("node-a").await, nats.store("node-b").await);
    let key = community("contested");
    let mut wins = [0u32; 2];
    let mut last_revision = 0;
    for round in 0..100 {
        let (ra, rb) = tokio::join!(a.claim(&key), b.claim(&key));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let (winner, revision) = match (ra, rb) {
            (Some(revision), None) => (&a, revision),
            (None, Some(revision)) => (&b, revision),
            other => panic!("round {round}: {other:?}"),
        };
        wins[usize::from(winner.node_id() == "node-b")] += 1;
        assert!(
            revision > last_revision,
            "fencing tokens rise across owners"
        );
        last_revision = revision;
        assert_eq!(
            a.owner(&key).await.unwrap(),
            Some((winner.node_id().to_owned(), revision))
        );
        assert!(
            winner.release(&key, revision).await.unwrap(),
            "round {round}"
        );
    }
    assert_eq!(wins[0] + wins[1], 100);
    eprintln!("wins: node-a {}, node-b {}", wins[0], wins[1]);
}

#[tokio::test]
async fn a_renewal_or_release_with_a_stale_revision_is_refused() {
    let nats = NatsServer::start();
    let (a, b) = (nats.store("node-a").await, nats.store("node-b").await);
    let key = community("c1");
    let first = a.claim(&key).await.unwrap().unwrap();
    let second = a.renew(&key, first).await.unwrap().unwrap();
    // The old revision is no longer the entry's: lost, and nothing written.
    assert_eq!(a.renew(&key, first).await.unwrap(), None);
    assert!(!a.release(&key, first).await.unwrap());
    assert_eq!(
        b.owner(&key).await.unwrap(),
        Some(("node-a".to_owned(), second))
    );
    // Nor can another node renew or release a lease at a revision it guessed.
    assert_eq!(b.renew(&key, second + 1).await.unwrap(), None);
    assert!(!b.release(&key, second + 1).await.unwrap());
    // The right revision still works.
    assert!(a.renew(&key, second).await.unwrap().is_some());
}

#[tokio::test]
async fn release_lets_another_node_claim_at_once() {
    let nats = NatsServer::start();
    let (a, b) = (nats.store("node-a").await, nats.store("node-b").await);
    let key = community("c1");
    let revision = a.claim(&key).await.unwrap().unwrap();
    assert!(a.release(&key, revision).await.unwrap());
    assert_eq!(a.owner(&key).await.unwrap(), None);
    let started = Instant::now();
    let b_revision = b
        .claim(&key)
        .await
        .unwrap()
        .expect("free at once after the release");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(b_revision > revision);
    // A late second release by the old holder leaves the new holder alone.
    assert!(!a.release(&key, revision).await.unwrap());
    assert_eq!(
        a.owner(&key).await.unwrap(),
        Some(("node-b".to_owned(), b_revision))
    );
}

#[tokio::test]
async fn a_holder_that_stops_renewing_stops_serving_before_another_can_claim() {
    let nats = NatsServer::start();
    let (a, b) = (nats.store("node-a").await, nats.store("node-b").await);
    let key = community("c1");
    let timing = timing();
    // Node A claims through the lease core, then stops (no renewal ever).
    let sent = Instant::now();
    let mut lease_a = Lease::new(timing, sent);
    assert_eq!(lease_a.poll(sent), Action::Claim);
    let revision = a.claim(&key).await.unwrap().unwrap();
    lease_a.claim_done(ClaimOutcome::Created { revision }, Instant::now());
    let a_valid_until = lease_a.valid_until().unwrap();
    assert_eq!(a_valid_until, sent + TEST_TTL - timing.margin());
    // Node B tries every 20 ms until the entry has expired.
    let mut refused = 0;
    let (b_revision, b_claimed) = loop {
        let attempt = Instant::now();
        match b.claim(&key).await.unwrap() {
            Some(b_revision) => break (b_revision, Instant::now()),
            None => refused += 1,
        }
        assert!(attempt < sent + TEST_TTL * 3, "B never got the key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused > 0);
    assert!(b_revision > revision);
    // Only after the TTL, counted from A's send...
    assert!(
        b_claimed >= sent + TEST_TTL,
        "claimed {:?} after A's claim, TTL {TEST_TTL:?}",
        b_claimed - sent
    );
    // ...and A had stopped serving before that moment.
    assert!(a_valid_until < b_claimed);
    assert!(
        lease_a
            .may_serve(a_valid_until - Duration::from_millis(1))
            .is_some()
    );
    assert_eq!(lease_a.may_serve(a_valid_until), None);
    assert_eq!(lease_a.may_serve(b_claimed), None);
    eprintln!(
        "A served until +{:?}, B claimed at +{:?} after {refused} refusals",
        a_valid_until - sent,
        b_claimed - sent
    );
}

#[test]
fn a_keeper_that_dies_is_taken_over_after_the_ttl_and_its_view_runs_out_first() {
    let nats = NatsServer::start();
    let key = community("c1");
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    // Node A's keeper runs on its own runtime, which then dies without releasing anything.
    let runtime_a = runtime("node-a");
    let (keeper_a, view_a) = runtime_a.block_on(async {
        let keeper = LeaseKeeper::spawn(nats.store("node-a").await);
        keeper.want(key.clone());
        let view = keeper.view();
        (keeper, view)
    });
    let runtime_b = runtime("node-b");
    runtime_b.block_on(async {
        let first = eventually(Duration::from_secs(2), || {
            view_a.grant(&key, Instant::now())
        })
        .await
        .expect("A serves the key");
        // A few renewals: the revision rises, the tenure stays.
        tokio::time::sleep(timing().renew_every() * 2 + Duration::from_millis(200)).await;
        let renewed = view_a.grant(&key, Instant::now()).expect("still served");
        assert!(renewed.revision > first.revision);
        assert_eq!(renewed.tenure, first.tenure);
    });
    runtime_a.shutdown_background();
    drop(keeper_a);
    let died = Instant::now();
    runtime_b.block_on(async {
        // What A's view last said; nobody updates it any more.
        let last = view_a.grant(&key, died);
        let keeper_b = LeaseKeeper::spawn(nats.store("node-b").await);
        keeper_b.want(key.clone());
        let view_b: LeaseView = keeper_b.view();
        let (b_serves, grant_b) = eventually(TEST_TTL * 2, || {
            let now = Instant::now();
            view_b.grant(&key, now).map(|grant| (now, grant))
        })
        .await
        .expect("B takes the key over");
        // A's grant ran out by itself, before B began to serve, and never overlapped.
        if let Some(last) = last {
            assert!(
                last.valid_until < b_serves,
                "A until {:?}, B from {:?}",
                last.valid_until - died,
                b_serves - died
            );
            assert!(grant_b.tenure > last.revision, "the fencing token rose");
            // A's last renewal was sent at most a TTL before B could claim.
            let a_last_sent = last.valid_until - timing().validity();
            assert!(b_serves >= a_last_sent + TEST_TTL);
        }
        assert_eq!(view_a.may_serve(&key, b_serves), None);
        assert!(
            b_serves - died < TEST_TTL + Duration::from_secs(2),
            "{:?}",
            b_serves - died
        );
        assert!(keeper_b.shutdown().await);
    });
}

#[tokio::test]
async fn the_keeper_renews_releases_on_request_and_on_shutdown() {
    let nats = NatsServer::start();
    let (k1, k2) = (community("c1"), LeaseKey::voice_room("vc_general").unwrap());
    let keeper_a = LeaseKeeper::spawn(nats.store("node-a").await);
    keeper_a.want(k1.clone());
    keeper_a.want(k2.clone());
    let view_a = keeper_a.view();
    let served = |view: &LeaseView, key: &LeaseKey| view.may_serve(key, Instant::now());
    eventually(Duration::from_secs(2), || {
        (served(&view_a, &k1).is_some() && served(&view_a, &k2).is_some()).then_some(())
    })
    .await
    .expect("A serves both keys");
    let first = view_a.grant(&k1, Instant::now()).unwrap();
    // Past the validity of the first write: still served, on a renewal.
    tokio::time::sleep(timing().validity() + Duration::from_millis(200)).await;
    let later = view_a.grant(&k1, Instant::now()).expect("renewed in time");
    assert!(later.revision > first.revision && later.tenure == first.tenure);
    assert_eq!(view_a.held(Instant::now()), vec![k1.clone(), k2.clone()]);

    // Node B wants k1 too, but A holds it.
    let keeper_b = LeaseKeeper::spawn(nats.store("node-b").await);
    keeper_b.want(k1.clone());
    keeper_b.want(k2.clone());
    let view_b = keeper_b.view();
    tokio::time::sleep(timing().retry_every() * 3).await;
    assert_eq!(served(&view_b, &k1), None);

    // A lets k1 go: A stops serving it at once, B has it well before a TTL.
    let released = Instant::now();
    keeper_a.release(k1.clone());
    eventually(Duration::from_millis(500), || {
        served(&view_a, &k1).is_none().then_some(())
    })
    .await
    .expect("A stops serving k1");
    eventually(TEST_TTL / 2, || served(&view_b, &k1))
        .await
        .expect("B claims k1 soon after the release");
    assert!(released.elapsed() < TEST_TTL / 2);
    assert!(served(&view_a, &k2).is_some() && served(&view_b, &k2).is_none());

    // A drains: k2 is released and B takes it at once too.
    let draining = Instant::now();
    assert!(keeper_a.shutdown().await, "every release answered");
    assert_eq!(served(&view_a, &k2), None);
    eventually(TEST_TTL / 2, || served(&view_b, &k2))
        .await
        .expect("B claims k2 soon after A's shutdown");
    assert!(draining.elapsed() < TEST_TTL / 2);
    assert!(keeper_b.shutdown().await);
}

#[tokio::test]
async fn a_bucket_with_another_ttl_is_refused() {
    let nats = NatsServer::start();
    let _production = nats.store("node-a").await;
    let other = LeaseTiming::scaled(TEST_TTL * 2).unwrap();
    match nats.store_with("node-b", other).await {
        Err(ClusterError::Bucket { bucket, source }) => {
            assert_eq!(bucket, "test_leases");
            assert!(source.to_string().contains("max_age"), "{source}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_store_connects_with_the_cluster_configuration() {
    let nats = NatsServer::start();
    let config = openchatd::config::ClusterConfig {
        nats_urls: vec![nats.url()],
        node_id: "node-c".to_owned(),
        name: "cfg".to_owned(),
    };
    let store = LeaseStore::connect(&config, timing())
        .await
        .expect("connect");
    assert_eq!(store.node_id(), "node-c");
    let key = community("c1");
    let revision = store.claim(&key).await.unwrap().unwrap();
    assert_eq!(
        store.owner(&key).await.unwrap(),
        Some(("node-c".to_owned(), revision))
    );
    // Nobody listening: a typed error, not a hang.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = openchatd::config::ClusterConfig {
        nats_urls: vec![format!("nats://{dead}")],
        ..config
    };
    let started = Instant::now();
    assert!(matches!(
        LeaseStore::connect(&config, timing()).await,
        Err(ClusterError::Connect(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(10));
}
