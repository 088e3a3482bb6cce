//! The lease core against explicit instants, then a simulated KV server with delays, lost
//! answers and stalled nodes, checking that two nodes never serve one key at the same instant.

use std::time::{Duration, Instant};

use super::*;

const T: LeaseTiming = LeaseTiming::PRODUCTION;

/// `ms` milliseconds after `t0`.
fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// A lease claimed by a request sent at `t0` and created at `revision`, answered 300 ms later.
fn held(t0: Instant, revision: u64) -> Lease {
    let mut lease = Lease::new(T, t0);
    assert_eq!(lease.poll(t0), Action::Claim);
    lease.claim_done(ClaimOutcome::Created { revision }, at(t0, 300));
    lease
}

#[test]
fn production_timing_is_the_documented_one() {
    assert_eq!(T.ttl(), Duration::from_secs(15));
    assert_eq!(T.renew_every(), Duration::from_secs(5));
    assert_eq!(T.margin(), Duration::from_secs(2));
    assert_eq!(T.retry_every(), Duration::from_secs(1));
    assert_eq!(T.validity(), Duration::from_secs(13));
    assert_eq!(LeaseTiming::default(), T);
    assert_eq!(
        LeaseTiming::new(LEASE_TTL, RENEW_EVERY, SAFETY_MARGIN, RETRY_EVERY).unwrap(),
        T
    );
}

#[test]
fn timings_that_could_lapse_between_renewals_are_refused() {
    let s = Duration::from_secs;
    for (ttl, renew, margin, retry) in [
        (s(15), s(5), s(15), s(1)),          // margin = ttl
        (s(15), s(5), Duration::ZERO, s(1)), // no margin
        (s(15), s(12), s(2), s(1)),          // renew + retry = validity
        (s(15), Duration::ZERO, s(2), s(1)),
        (s(15), s(5), s(2), Duration::ZERO),
    ] {
        assert!(
            matches!(
                LeaseTiming::new(ttl, renew, margin, retry),
                Err(ClusterError::InvalidTiming(_))
            ),
            "{ttl:?} {renew:?} {margin:?} {retry:?}"
        );
    }
    let scaled = LeaseTiming::scaled(Duration::from_secs(3)).unwrap();
    assert_eq!(scaled.renew_every(), Duration::from_secs(1));
    assert_eq!(scaled.margin(), Duration::from_millis(400));
    assert_eq!(scaled.retry_every(), Duration::from_millis(200));
    assert_eq!(LeaseTiming::scaled(LEASE_TTL).unwrap(), T);
}

#[test]
fn lease_keys_are_prefixed_ids_of_a_safe_alphabet() {
    assert_eq!(
        LeaseKey::community("0d5f6a8b-1f43_x").unwrap().as_str(),
        "community.0d5f6a8b-1f43_x"
    );
    assert_eq!(
        LeaseKey::voice_room("vc_general").unwrap().to_string(),
        "voice.vc_general"
    );
    assert!(LeaseKey::community(&"a".repeat(MAX_ID_LEN)).is_ok());
    for bad in [
        "",
        "a.b",
        "a b",
        "a*",
        "a>",
        "ü",
        &"a".repeat(MAX_ID_LEN + 1),
    ] {
        assert!(
            matches!(LeaseKey::community(bad), Err(ClusterError::InvalidKey(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn a_new_lease_claims_at_once_and_waits_for_the_answer() {
    let t0 = Instant::now();
    let mut lease = Lease::new(T, t0);
    assert_eq!(lease.state(), LeaseState::NotHeld);
    assert_eq!(lease.next_wakeup(), Some(t0));
    assert_eq!(lease.poll(t0), Action::Claim);
    assert_eq!(lease.state(), LeaseState::Claiming);
    assert!(lease.is_pending());
    // One operation at a time: nothing more until the answer.
    assert_eq!(lease.next_wakeup(), None);
    assert_eq!(lease.poll(at(t0, 10_000)), Action::Nothing);
    assert_eq!(lease.may_serve(at(t0, 1)), None);
}

#[test]
fn a_created_lease_is_valid_from_the_send_until_ttl_minus_margin() {
    let t0 = Instant::now();
    let lease = held(t0, 7);
    assert_eq!(
        lease.state(),
        LeaseState::Held {
            revision: 7,
            renewed_at: t0,
            tenure: 7
        }
    );
    assert_eq!(lease.valid_until(), Some(at(t0, 13_000)));
    assert_eq!(lease.may_serve(at(t0, 300)), Some(7));
    assert_eq!(lease.may_serve(at(t0, 12_999)), Some(7));
    // Counted from the send (t0), not from the answer (t0 + 300 ms).
    assert_eq!(lease.may_serve(at(t0, 13_000)), None);
    assert_eq!(lease.next_wakeup(), Some(at(t0, 5_000)));
}

#[test]
fn renewals_every_five_seconds_keep_the_lease_with_rising_revisions() {
    let t0 = Instant::now();
    let mut lease = held(t0, 7);
    assert_eq!(lease.poll(at(t0, 4_999)), Action::Nothing);
    let mut revision = 7;
    for round in 1..=5u64 {
        let sent = at(t0, round * 5_000);
        assert_eq!(lease.poll(sent), Action::Renew { revision });
        assert_eq!(lease.poll(sent), Action::Nothing, "one renewal at a time");
        // Still served on the previous renewal while this one is on its way.
        assert_eq!(
            lease.may_serve(sent + Duration::from_millis(100)),
            Some(revision)
        );
        lease.renew_done(
            RenewOutcome::Updated {
                revision: revision + 3,
            },
            sent + Duration::from_millis(200),
        );
        revision += 3;
        assert_eq!(
            lease.state(),
            LeaseState::Held {
                revision,
                renewed_at: sent,
                tenure: 7
            }
        );
        assert_eq!(lease.valid_until(), Some(sent + Duration::from_secs(13)));
        assert_eq!(lease.next_wakeup(), Some(sent + Duration::from_secs(5)));
    }
}

#[test]
fn a_renewal_with_a_stale_revision_loses_the_lease() {
    let t0 = Instant::now();
    let mut lease = held(t0, 7);
    assert_eq!(lease.poll(at(t0, 5_000)), Action::Renew { revision: 7 });
    lease.renew_done(RenewOutcome::WrongRevision, at(t0, 5_100));
    assert_eq!(lease.state(), LeaseState::Lost { revision: 7 });
    // Lost means lost at once, although the old validity had 8 s left.
    assert_eq!(lease.may_serve(at(t0, 5_100)), None);
    assert_eq!(lease.valid_until(), None);
    // Claimed again after the retry interval.
    assert_eq!(lease.next_wakeup(), Some(at(t0, 6_100)));
    assert_eq!(lease.poll(at(t0, 6_000)), Action::Nothing);
    assert_eq!(lease.poll(at(t0, 6_100)), Action::Claim);
    lease.claim_done(ClaimOutcome::HeldElsewhere, at(t0, 6_200));
    assert_eq!(lease.state(), LeaseState::NotHeld);
    assert_eq!(lease.next_wakeup(), Some(at(t0, 7_200)));
}

#[test]
fn a_timed_out_renewal_keeps_the_old_validity_and_never_extends_it() {
    let t0 = Instant::now();
    let mut lease = held(t0, 7);
    // Every renewal from 5 s on times out after 2 s, then is retried 1 s later.
    let mut now = at(t0, 5_000);
    let mut renewals = 0;
    while now < at(t0, 15_000) {
        match lease.poll(now) {
            Action::Renew { revision: 7 } => {
                renewals += 1;
                now += Duration::from_secs(2);
                lease.renew_done(RenewOutcome::Failed, now);
                assert_eq!(lease.valid_until(), Some(at(t0, 13_000)));
            }
            Action::Nothing => now += Duration::from_millis(100),
            other => panic!("{other:?} at {:?}", now - t0),
        }
        let expected = (now < at(t0, 13_000)).then_some(7);
        assert_eq!(lease.may_serve(now), expected, "at {:?}", now - t0);
    }
    assert_eq!(renewals, 4, "at 5, 8, 11 and 14 s");
    // At the TTL the entry has expired on the server: the lease is lost and claimed again.
    assert!(matches!(lease.state(), LeaseState::Held { .. }));
    assert_eq!(lease.next_wakeup(), Some(at(t0, 15_000)));
    assert_eq!(lease.poll(at(t0, 17_000)), Action::Claim);
}

#[test]
fn a_lapsed_lease_renewed_at_its_revision_is_continued() {
    // Renewals stalled past the validity but not past the TTL: the entry is still ours, and an
    // update at the expected revision proves nobody wrote in between.
    let t0 = Instant::now();
    let mut lease = held(t0, 7);
    assert_eq!(lease.poll(at(t0, 13_500)), Action::Renew { revision: 7 });
    assert_eq!(lease.may_serve(at(t0, 13_600)), None);
    lease.renew_done(RenewOutcome::Updated { revision: 9 }, at(t0, 13_700));
    assert_eq!(lease.may_serve(at(t0, 13_700)), Some(9));
    assert_eq!(
        lease.state(),
        LeaseState::Held {
            revision: 9,
            renewed_at: at(t0, 13_500),
            tenure: 7
        }
    );
}

#[test]
fn a_refused_or_failed_claim_is_retried() {
    let t0 = Instant::now();
    let mut lease = Lease::new(T, t0);
    for (round, outcome) in [ClaimOutcome::HeldElsewhere, ClaimOutcome::Failed]
        .into_iter()
        .enumerate()
    {
        let sent = at(t0, round as u64 * 3_000);
        assert_eq!(lease.poll(sent), Action::Claim);
        lease.claim_done(outcome, sent + Duration::from_millis(500));
        assert_eq!(lease.state(), LeaseState::NotHeld);
        assert_eq!(
            lease.next_wakeup(),
            Some(sent + Duration::from_millis(1_500))
        );
        assert_eq!(lease.may_serve(sent + Duration::from_millis(600)), None);
    }
}

#[test]
fn release_stops_serving_at_once_then_deletes_the_revision() {
    let t0 = Instant::now();
    let mut lease = held(t0, 7);
    lease.release(at(t0, 1_000));
    assert_eq!(lease.state(), LeaseState::Releasing { revision: 7 });
    assert_eq!(lease.may_serve(at(t0, 1_000)), None);
    assert_eq!(lease.next_wakeup(), Some(at(t0, 1_000)), "due at once");
    assert_eq!(lease.poll(at(t0, 1_000)), Action::Release { revision: 7 });
    assert_eq!(lease.poll(at(t0, 1_000)), Action::Nothing);
    lease.release_done(at(t0, 1_100));
    assert_eq!(lease.state(), LeaseState::Released);
    assert_eq!(lease.next_wakeup(), None);
    assert_eq!(lease.poll(at(t0, 60_000)), Action::Nothing);
}

#[test]
fn release_during_a_renewal_deletes_the_renewed_revision() {
    let t0 = Instant::now();
    let mut lease = held(t0, 7);
    assert_eq!(lease.poll(at(t0, 5_000)), Action::Renew { revision: 7 });
    lease.release(at(t0, 5_050));
    assert_eq!(lease.may_serve(at(t0, 5_050)), None);
    assert_eq!(
        lease.poll(at(t0, 5_060)),
        Action::Nothing,
        "renewal pending"
    );
    lease.renew_done(RenewOutcome::Updated { revision: 8 }, at(t0, 5_100));
    assert_eq!(lease.may_serve(at(t0, 5_100)), None);
    assert_eq!(lease.poll(at(t0, 5_100)), Action::Release { revision: 8 });
}

#[test]
fn release_during_a_claim_releases_what_the_claim_created() {
    let t0 = Instant::now();
    let mut lease = Lease::new(T, t0);
    assert_eq!(lease.poll(t0), Action::Claim);
    lease.release(at(t0, 10));
    lease.claim_done(ClaimOutcome::Created { revision: 3 }, at(t0, 20));
    assert_eq!(lease.may_serve(at(t0, 20)), None);
    assert_eq!(lease.poll(at(t0, 20)), Action::Release { revision: 3 });
    lease.release_done(at(t0, 30));
    assert_eq!(lease.state(), LeaseState::Released);
}

#[test]
fn release_of_a_lease_not_held_needs_no_delete() {
    let t0 = Instant::now();
    let mut lease = Lease::new(T, t0);
    assert_eq!(lease.poll(t0), Action::Claim);
    lease.claim_done(ClaimOutcome::HeldElsewhere, at(t0, 10));
    lease.release(at(t0, 20));
    assert_eq!(lease.poll(at(t0, 20)), Action::Nothing);
    assert_eq!(lease.state(), LeaseState::Released);
    // Wanted again: claimed at once.
    lease.want(at(t0, 30));
    assert_eq!(lease.state(), LeaseState::NotHeld);
    assert_eq!(lease.poll(at(t0, 30)), Action::Claim);
}

#[test]
fn wanted_again_while_releasing_is_claimed_after_the_release() {
    let t0 = Instant::now();
    let mut lease = held(t0, 7);
    lease.release(at(t0, 1_000));
    lease.want(at(t0, 1_001));
    assert_eq!(lease.poll(at(t0, 1_002)), Action::Release { revision: 7 });
    lease.release_done(at(t0, 1_100));
    assert_eq!(lease.poll(at(t0, 1_100)), Action::Claim);
}

#[test]
fn answers_to_operations_not_pending_are_ignored() {
    let t0 = Instant::now();
    let mut lease = held(t0, 7);
    let before = lease.state();
    lease.renew_done(RenewOutcome::WrongRevision, at(t0, 1_000));
    lease.claim_done(ClaimOutcome::Created { revision: 99 }, at(t0, 1_000));
    lease.release_done(at(t0, 1_000));
    assert_eq!(lease.state(), before);
    assert_eq!(lease.may_serve(at(t0, 1_000)), Some(7));
}

/// A deterministic xorshift generator, so a failing schedule can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One node of the simulation: its lease, the answer it waits for and when it may act.
struct SimNode {
    lease: Lease,
    /// (instant the answer arrives, the answer), `None` for an answer that never comes.
    inbox: Option<(Instant, Option<SimAnswer>)>,
    /// The instant the operation counts as timed out.
    deadline: Instant,
    /// The node does not run (a stalled executor) until then.
    stalled_until: Instant,
}

#[derive(Debug, Clone, Copy)]
enum SimAnswer {
    Claim(ClaimOutcome),
    Renew(RenewOutcome),
    Release,
}

/// The KV entry of the simulated server: (owner, revision, stamped at).
type SimEntry = Option<(usize, u64, Instant)>;

/// Applies an action on the server at its arrival instant; the server expires entries exactly
/// at the TTL (a real server is later, which only helps).
fn apply(
    entry: &mut SimEntry,
    seq: &mut u64,
    node: usize,
    action: Action,
    now: Instant,
) -> SimAnswer {
    if entry.is_some_and(|(_, _, stamped)| now >= stamped + T.ttl()) {
        *entry = None;
    }
    let current = entry.map(|(_, revision, _)| revision);
    match action {
        Action::Claim if entry.is_none() => {
            *seq += 1;
            *entry = Some((node, *seq, now));
            SimAnswer::Claim(ClaimOutcome::Created { revision: *seq })
        }
        Action::Claim => SimAnswer::Claim(ClaimOutcome::HeldElsewhere),
        Action::Renew { revision } if current == Some(revision) => {
            *seq += 1;
            *entry = Some((node, *seq, now));
            SimAnswer::Renew(RenewOutcome::Updated { revision: *seq })
        }
        Action::Renew { .. } => SimAnswer::Renew(RenewOutcome::WrongRevision),
        Action::Release { revision } => {
            if current == Some(revision) {
                *seq += 1;
                *entry = None;
            }
            SimAnswer::Release
        }
        Action::Nothing => unreachable!("not sent"),
    }
}

#[test]
fn simulated_nodes_never_serve_one_key_at_the_same_instant() {
    const NODES: usize = 3;
    const TICK: Duration = Duration::from_millis(10);
    const OP_TIMEOUT: Duration = Duration::from_secs(2);
    let mut served_ticks = 0u64;
    let mut total_ticks = 0u64;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let t0 = Instant::now();
        let mut nodes: Vec<SimNode> = (0..NODES)
            .map(|_| SimNode {
                lease: Lease::new(T, t0),
                inbox: None,
                deadline: t0,
                stalled_until: t0,
            })
            .collect();
        let mut entry: SimEntry = None;
        let mut seq = 0u64;
        // Requests on their way: (arrival, node, action, answer delay or None if lost).
        let mut wire: Vec<(Instant, usize, Action, Option<Duration>)> = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(120) {
            // The server handles what has arrived, in order of arrival.
            wire.sort_by_key(|(arrival, ..)| *arrival);
            while wire.first().is_some_and(|(arrival, ..)| *arrival <= now) {
                let (arrival, node, action, answer_delay) = wire.remove(0);
                let answer = apply(&mut entry, &mut seq, node, action, arrival);
                if let Some(delay) = answer_delay {
                    nodes[node].inbox = Some((arrival + delay, Some(answer)));
                }
            }
            for (index, node) in nodes.iter_mut().enumerate() {
                if now < node.stalled_until {
                    continue;
                }
                // An answer, or the timeout of the driver.
                let answer = match node.inbox {
                    Some((arrives, Some(answer))) if arrives <= now && arrives <= node.deadline => {
                        Some(answer)
                    }
                    _ if node.lease.is_pending() && now >= node.deadline => {
                        Some(match node.lease.state() {
                            LeaseState::Claiming => SimAnswer::Claim(ClaimOutcome::Failed),
                            LeaseState::Releasing { .. } => SimAnswer::Release,
                            _ => SimAnswer::Renew(RenewOutcome::Failed),
                        })
                    }
                    _ => None,
                };
                if let Some(answer) = answer {
                    node.inbox = None;
                    match answer {
                        SimAnswer::Claim(outcome) => node.lease.claim_done(outcome, now),
                        SimAnswer::Renew(outcome) => node.lease.renew_done(outcome, now),
                        SimAnswer::Release => node.lease.release_done(now),
                    }
                }
                let action = node.lease.poll(now);
                if action != Action::Nothing {
                    node.deadline = now + OP_TIMEOUT;
                    node.inbox = Some((node.deadline, None));
                    let to_server = Duration::from_millis(rng.below(1_500));
                    // One answer in ten is lost; the others take up to 1.5 s.
                    let back =
                        (rng.below(10) != 0).then(|| Duration::from_millis(rng.below(1_500)));
                    wire.push((now + to_server, index, action, back));
                }
                // Now and then a node stalls for up to 20 s, or lets its lease go and wants
                // it again later.
                match rng.below(4_000) {
                    0 => node.stalled_until = now + Duration::from_millis(rng.below(20_000)),
                    1 => node.lease.release(now),
                    2 => node.lease.want(now),
                    _ => {}
                }
            }
            // The invariant: whoever may serve is the owner of the entry the server holds now.
            if entry.is_some_and(|(_, _, stamped)| now >= stamped + T.ttl()) {
                entry = None;
            }
            let serving: Vec<(usize, u64)> = nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.lease.may_serve(now).map(|r| (i, r)))
                .collect();
            assert!(
                serving.len() <= 1,
                "seed {seed} at {:?}: {serving:?}",
                now - t0
            );
            if let Some(&(node, revision)) = serving.first() {
                let (owner, current, _) =
                    entry.unwrap_or_else(|| panic!("seed {seed}: node {node} serves no entry"));
                assert_eq!(owner, node, "seed {seed} at {:?}", now - t0);
                assert!(current >= revision, "seed {seed}: {current} < {revision}");
                served_ticks += 1;
            }
            total_ticks += 1;
            now += TICK;
        }
    }
    // Not vacuous: despite the faults (and the spells when no node wants the key), someone
    // served a good part of the time.
    assert!(
        served_ticks * 3 > total_ticks,
        "served {served_ticks} of {total_ticks} ticks"
    );
}
