//! The sans-IO core of one lease: a key this node wants to own (a community or a voice room),
//! what to send next, what an answer means, and until when the node may serve the key. No
//! runtime and no sockets: every instant is an argument, so the tests replay any schedule.
//!
//! The safety rule: a lease written (created or renewed) by a request *sent* at `t` lives in the
//! KV bucket until at least `t + ttl`, because the server stamps the entry after receiving it and
//! the bucket's `max_age` is `ttl`. This node serves the key only until `t + ttl - margin`, so
//! when its renewals stall it stops accepting commands before the entry can have expired and
//! another node could claim it. The revision of each successful write is the fencing token:
//! an update with the expected revision succeeds only if no other node wrote in between.

use std::fmt;
use std::time::{Duration, Instant};

use super::ClusterError;

/// How long a lease entry lives in the bucket without being rewritten (the bucket's `max_age`).
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the holder rewrites its entry.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long before the entry can expire the holder stops serving: covers the scheduling delay
/// between checking the lease and acting on it, and clock-rate differences between the node
/// and the NATS server.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(2);
/// How soon a failed or refused claim, or a failed renewal, is tried again. With the TTL it
/// bounds the takeover of a dead owner's key: `LEASE_TTL + RETRY_EVERY` plus one round trip.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Longest community or room id a [`LeaseKey`] accepts.
pub const MAX_ID_LEN: usize = 128;

/// The durations of a lease. [`LeaseTiming::PRODUCTION`] is what nodes use; tests scale it down
/// with [`LeaseTiming::scaled`] so that an expiry takes seconds, not fifteen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    ttl: Duration,
    renew_every: Duration,
    margin: Duration,
    retry_every: Duration,
}

impl LeaseTiming {
    /// 15 s TTL, renewed every 5 s, served until 2 s before the TTL, retried after 1 s.
    pub const PRODUCTION: LeaseTiming = LeaseTiming {
        ttl: LEASE_TTL,
        renew_every: RENEW_EVERY,
        margin: SAFETY_MARGIN,
        retry_every: RETRY_EVERY,
    };

    /// Checked timings: the margin must be shorter than the TTL, and a renewal (plus one retry)
    /// must come before the validity ends, or the lease would lapse between renewals.
    pub fn new(
        ttl: Duration,
        renew_every: Duration,
        margin: Duration,
        retry_every: Duration,
    ) -> Result<LeaseTiming, ClusterError> {
        if margin.is_zero() || margin >= ttl {
            return Err(ClusterError::InvalidTiming(
                "the safety margin must be above zero and below the TTL",
            ));
        }
        if renew_every.is_zero() || retry_every.is_zero() {
            return Err(ClusterError::InvalidTiming(
                "the renewal and retry intervals must be above zero",
            ));
        }
        if renew_every + retry_every >= ttl - margin {
            return Err(ClusterError::InvalidTiming(
                "a renewal and one retry must fit in the TTL minus the safety margin",
            ));
        }
        Ok(LeaseTiming {
            ttl,
            renew_every,
            margin,
            retry_every,
        })
    }

    /// The production proportions (renew at a third of the TTL, margin 2/15, retry 1/15) for
    /// another TTL of at least 15 ms.
    pub fn scaled(ttl: Duration) -> Result<LeaseTiming, ClusterError> {
        LeaseTiming::new(ttl, ttl / 3, ttl * 2 / 15, ttl / 15)
    }

    /// The bucket's `max_age`: how long an entry lives without being rewritten.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The interval between two renewals.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }

    /// How long before the TTL the holder stops serving.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// The delay before a failed or refused attempt is made again.
    pub fn retry_every(&self) -> Duration {
        self.retry_every
    }

    /// How long after sending a successful write the holder may serve: `ttl - margin`.
    pub fn validity(&self) -> Duration {
        self.ttl - self.margin
    }
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming::PRODUCTION
    }
}

/// The KV key of a lease: `community.<id>` or `voice.<id>`. Ids are 1 to [`MAX_ID_LEN`]
/// characters of `[A-Za-z0-9_-]`, which NATS accepts in keys and subjects alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey(String);

impl LeaseKey {
    /// The lease of a community (a server of the API).
    pub fn community(id: &str) -> Result<LeaseKey, ClusterError> {
        LeaseKey::with_prefix("community", id)
    }

    /// The lease of a voice room (a voice channel's call).
    pub fn voice_room(id: &str) -> Result<LeaseKey, ClusterError> {
        LeaseKey::with_prefix("voice", id)
    }

    fn with_prefix(prefix: &str, id: &str) -> Result<LeaseKey, ClusterError> {
        let valid = (1..=MAX_ID_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(LeaseKey(format!("{prefix}.{id}")))
        } else {
            Err(ClusterError::InvalidKey(id.to_owned()))
        }
    }

    /// The key as stored in the bucket.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where one lease stands, as far as this node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Wanted but not held; a claim is made at the next attempt.
    NotHeld,
    /// A claim (KV create) is on its way.
    Claiming,
    /// This node wrote the entry at `revision` with a request sent at `renewed_at`. `tenure` is
    /// the revision of the claim that started this holding; it stays while renewals succeed.
    Held {
        revision: u64,
        renewed_at: Instant,
        tenure: u64,
    },
    /// The lease was held at `revision` and is gone: a renewal found another revision, or the
    /// entry has expired. Whatever was kept in memory for the key is stale. It is claimed again
    /// at the next attempt.
    Lost { revision: u64 },
    /// No longer wanted; the release (KV delete of `revision`) is on its way.
    Releasing { revision: u64 },
    /// No longer wanted and not held: the lease can be forgotten.
    Released,
}

/// What the driver should send now; each action must be answered with the matching
/// `*_done` call before the lease asks for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create the entry with this node's id (answer with [`Lease::claim_done`]).
    Claim,
    /// Update the entry expecting `revision` (answer with [`Lease::renew_done`]).
    Renew { revision: u64 },
    /// Delete the entry if it is still at `revision` (answer with [`Lease::release_done`]).
    Release { revision: u64 },
    /// Nothing to send now; see [`Lease::next_wakeup`].
    Nothing,
}

/// The answer to [`Action::Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The entry was created at `revision`: the lease is ours.
    Created { revision: u64 },
    /// Another node holds the key.
    HeldElsewhere,
    /// No answer in time, or an error: whether the entry was written is unknown.
    Failed,
}

/// The answer to [`Action::Renew`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// The entry was rewritten at `revision`.
    Updated { revision: u64 },
    /// The entry is not at the expected revision (expired, or written by another node).
    WrongRevision,
    /// No answer in time, or an error: the old validity stands, nothing is extended.
    Failed,
}

/// The operation waiting for its answer, with the instant it was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Claim { sent_at: Instant },
    Renew { sent_at: Instant },
    Release,
}

/// One lease this node wants (or wanted): the state machine, fed with instants and answers.
#[derive(Debug, Clone)]
pub struct Lease {
    timing: LeaseTiming,
    state: LeaseState,
    pending: Option<Pending>,
    /// Earliest instant of the next claim or renewal.
    next_attempt: Instant,
    wanted: bool,
}

impl Lease {
    /// A wanted lease, not held, to be claimed at once.
    pub fn new(timing: LeaseTiming, now: Instant) -> Lease {
        Lease {
            timing,
            state: LeaseState::NotHeld,
            pending: None,
            next_attempt: now,
            wanted: true,
        }
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        self.state
    }

    /// The timings this lease runs on.
    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// Whether an action awaits its answer.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether this node still wants the lease.
    pub fn is_wanted(&self) -> bool {
        self.wanted
    }

    /// The revision this node may serve the key with at `now`, or `None`: only while held and
    /// before `renewed_at + ttl - margin`.
    pub fn may_serve(&self, now: Instant) -> Option<u64> {
        match self.state {
            LeaseState::Held { revision, .. } => self
                .valid_until()
                .filter(|until| now < *until)
                .map(|_| revision),
            _ => None,
        }
    }

    /// The end of the validity of the current holding, if held.
    pub fn valid_until(&self) -> Option<Instant> {
        match self.state {
            LeaseState::Held { renewed_at, .. } => Some(renewed_at + self.timing.validity()),
            _ => None,
        }
    }

    /// Want the lease (again): a released or releasing lease is claimed anew once its release
    /// is answered.
    pub fn want(&mut self, now: Instant) {
        self.wanted = true;
        if self.state == LeaseState::Released {
            self.state = LeaseState::NotHeld;
            self.next_attempt = now;
        }
    }

    /// Stop wanting the lease: a held lease stops being served at once and is released at the
    /// next poll (after the answer to a pending renewal, so the release names the latest
    /// revision); one not held becomes [`LeaseState::Released`].
    pub fn release(&mut self, now: Instant) {
        self.wanted = false;
        self.next_attempt = self.next_attempt.min(now);
        if let LeaseState::Held { revision, .. } = self.state {
            // Serving ends now, before the delete is even sent.
            self.state = LeaseState::Releasing { revision };
        }
    }

    /// The instant the lease wants to be polled at, or `None` while an answer is awaited (the
    /// answer is the wake-up) or once released.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if self.pending.is_some() {
            return None;
        }
        match self.state {
            LeaseState::Released => None,
            LeaseState::Held { renewed_at, .. } => {
                Some(self.next_attempt.min(renewed_at + self.timing.ttl))
            }
            _ => Some(self.next_attempt),
        }
    }

    /// What to send at `now`. An action marks the lease pending until its answer.
    pub fn poll(&mut self, now: Instant) -> Action {
        if self.pending.is_some() {
            return Action::Nothing;
        }
        // The entry of a lease whose renewals all failed has expired by now on the server.
        if let LeaseState::Held {
            revision,
            renewed_at,
            ..
        } = self.state
            && now >= renewed_at + self.timing.ttl
        {
            self.state = LeaseState::Lost { revision };
        }
        match self.state {
            LeaseState::NotHeld | LeaseState::Lost { .. } if !self.wanted => {
                self.state = LeaseState::Released;
                Action::Nothing
            }
            LeaseState::NotHeld | LeaseState::Lost { .. } if now >= self.next_attempt => {
                self.state = LeaseState::Claiming;
                self.pending = Some(Pending::Claim { sent_at: now });
                Action::Claim
            }
            LeaseState::Held { revision, .. } if now >= self.next_attempt => {
                self.pending = Some(Pending::Renew { sent_at: now });
                Action::Renew { revision }
            }
            LeaseState::Releasing { revision } => {
                self.pending = Some(Pending::Release);
                Action::Release { revision }
            }
            _ => Action::Nothing,
        }
    }

    /// Records the answer to [`Action::Claim`]; `now` is when it arrived. Ignored unless a claim
    /// is pending.
    pub fn claim_done(&mut self, outcome: ClaimOutcome, now: Instant) {
        let Some(Pending::Claim { sent_at }) = self.pending else {
            return;
        };
        self.pending = None;
        match outcome {
            ClaimOutcome::Created { revision } => {
                // Valid from the send, not the answer: the entry may have been stamped at any
                // moment in between.
                self.next_attempt = sent_at + self.timing.renew_every;
                self.state = if self.wanted {
                    LeaseState::Held {
                        revision,
                        renewed_at: sent_at,
                        tenure: revision,
                    }
                } else {
                    LeaseState::Releasing { revision }
                };
            }
            ClaimOutcome::HeldElsewhere | ClaimOutcome::Failed => {
                self.state = LeaseState::NotHeld;
                self.next_attempt = now + self.timing.retry_every;
            }
        }
    }

    /// Records the answer to [`Action::Renew`]; `now` is when it arrived. Ignored unless a
    /// renewal is pending.
    pub fn renew_done(&mut self, outcome: RenewOutcome, now: Instant) {
        let Some(Pending::Renew { sent_at }) = self.pending else {
            return;
        };
        self.pending = None;
        let (old_revision, tenure) = match self.state {
            LeaseState::Held {
                revision, tenure, ..
            } => (revision, Some(tenure)),
            LeaseState::Releasing { revision } => (revision, None),
            // A renewal is only handed out while held, and only `release` changes the state
            // meanwhile.
            _ => return,
        };
        match outcome {
            RenewOutcome::Updated { revision } => {
                self.next_attempt = sent_at + self.timing.renew_every;
                self.state = match tenure {
                    Some(tenure) => LeaseState::Held {
                        revision,
                        renewed_at: sent_at,
                        tenure,
                    },
                    None => LeaseState::Releasing { revision },
                };
            }
            RenewOutcome::WrongRevision => {
                self.state = LeaseState::Lost {
                    revision: old_revision,
                };
                self.next_attempt = now + self.timing.retry_every;
            }
            RenewOutcome::Failed => {
                // The old validity stands (the write may or may not have landed; if it did,
                // the entry only lives longer). Try again soon.
                self.next_attempt = now + self.timing.retry_every;
            }
        }
    }

    /// Records that the release was answered (deleted, not ours any more, or failed: in every
    /// case the key is no longer served, and an entry left behind expires with the TTL).
    pub fn release_done(&mut self, now: Instant) {
        if self.pending != Some(Pending::Release) {
            return;
        }
        self.pending = None;
        if self.wanted {
            self.state = LeaseState::NotHeld;
            self.next_attempt = now;
        } else {
            self.state = LeaseState::Released;
        }
    }
}

#[cfg(test)]
mod tests;
