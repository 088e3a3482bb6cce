//! Join tickets between signing and use (wire contract A.8, B.1): a ticket is single use, and
//! leaving a server, a kick, a ban or a revoked session voids the unused tickets taken before
//! it, so none of them works for the rest of its 60 seconds.
//!
//! The [`TicketBook`] numbers every issue and every void in the authority's order (one
//! thread decides both, so "before" is exact even within one millisecond). A ticket the book
//! has no number for (the book was full, or the ticket was signed elsewhere with the secret)
//! counts as issued at the start of its validity second, so a void in that second or later
//! voids it: the doubt goes against the ticket.

use std::collections::HashMap;

use super::{Community, Outcome};
use crate::domain::error::{DomainError, JoinDenial};
use crate::domain::model::Millis;
use crate::rtc::ticket::{Claims, Permissions, TICKET_TTL_SECS};

/// Issued tickets remembered at once. Beyond it (after sweeping expired ones) new tickets are
/// not numbered and fall back to the second-granular rule above, which can only refuse more.
pub const MAX_TRACKED_TICKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Issued {
    order: u64,
    exp: i64,
}

#[derive(Debug, Clone, Copy)]
struct Void {
    order: u64,
    at: Millis,
}

#[derive(Debug, Default)]
pub struct TicketBook {
    clock: u64,
    /// By `jti`, until the ticket expires.
    issued: HashMap<String, Issued>,
    /// Latest void of the tickets of a uid in a server (leave, kick, ban).
    by_member: HashMap<(String, String), Void>,
    /// Latest void of the tickets of a uid's device (a revoked session).
    by_device: HashMap<(String, String), Void>,
    /// Tickets already used, with their expiry (Unix seconds), for single use.
    used: HashMap<String, i64>,
}

impl TicketBook {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Remembers a ticket about to be signed (`exp` in Unix seconds).
    pub fn issue(&mut self, jti: &str, exp: i64, now: Millis) {
        if self.issued.len() >= MAX_TRACKED_TICKETS {
            let now_secs = now / 1000;
            self.issued.retain(|_, t| t.exp > now_secs);
            if self.issued.len() >= MAX_TRACKED_TICKETS {
                return;
            }
        }
        let order = self.tick();
        self.issued.insert(jti.to_owned(), Issued { order, exp });
    }

    /// Voids the unused tickets of `uid` in `server_id`.
    pub fn void_member(&mut self, server_id: &str, uid: &str, now: Millis) {
        let void = Void {
            order: self.tick(),
            at: now,
        };
        self.by_member
            .insert((server_id.to_owned(), uid.to_owned()), void);
    }

    /// Voids the unused tickets of `uid`'s device `device_id`, in every server.
    pub fn void_device(&mut self, uid: &str, device_id: &str, now: Millis) {
        let void = Void {
            order: self.tick(),
            at: now,
        };
        self.by_device
            .insert((uid.to_owned(), device_id.to_owned()), void);
    }

    /// Whether a void came after the ticket was issued.
    pub fn is_void(&self, claims: &Claims) -> bool {
        let voids = [
            self.by_member
                .get(&(claims.server_id.clone(), claims.user_uid.clone())),
            self.by_device
                .get(&(claims.user_uid.clone(), claims.device_id.clone())),
        ];
        let mut voids = voids.into_iter().flatten();
        match self.issued.get(&claims.jti) {
            Some(ticket) => voids.any(|v| v.order > ticket.order),
            None => {
                let issued_at = (claims.exp - TICKET_TTL_SECS) * 1000;
                voids.any(|v| v.at >= issued_at)
            }
        }
    }

    /// Marks a ticket used (`exp` in Unix seconds); false when it was used before.
    pub fn consume(&mut self, jti: &str, exp: i64) -> bool {
        if self.used.contains_key(jti) {
            return false;
        }
        self.used.insert(jti.to_owned(), exp);
        true
    }

    /// Forgets expired tickets (issued and used) and voids no unexpired ticket can predate.
    pub fn sweep(&mut self, now: Millis) {
        let now_secs = now / 1000;
        self.issued.retain(|_, t| t.exp > now_secs);
        self.used.retain(|_, exp| *exp > now_secs);
        let horizon = (TICKET_TTL_SECS + 1) * 1000;
        self.by_member.retain(|_, v| v.at + horizon > now);
        self.by_device.retain(|_, v| v.at + horizon > now);
    }

    pub fn tracked(&self) -> usize {
        self.issued.len()
    }
}

impl Community {
    /// `POST /v1/rtc/channels/{id}/join-ticket`: decides the grant ([`Community::grant_voice`])
    /// and remembers the ticket the caller signs with `jti` and `exp` (Unix seconds).
    pub fn grant_ticket(
        &mut self,
        actor: &super::Actor,
        server_id: &str,
        channel_id: &str,
        jti: &str,
        exp: i64,
        now: Millis,
    ) -> Result<Outcome<Permissions>, DomainError> {
        let granted = self.grant_voice(actor, server_id, channel_id, now)?;
        self.tickets.issue(jti, exp, now);
        Ok(granted)
    }

    /// `rtc.join` with a ticket whose signature and expiry checked out: refused when the uid
    /// is banned, or a leave, kick, ban or revoked session voided the ticket; otherwise used
    /// up (a second use is `rtc_ticket_replayed`).
    pub fn redeem_ticket(&mut self, claims: &Claims, now: Millis) -> Result<(), DomainError> {
        // A ban issued after the ticket still stops the join.
        if self.is_banned(&claims.server_id, &claims.user_uid, now) {
            return Err(DomainError::JoinDenied(JoinDenial::Banned));
        }
        if self.tickets.is_void(claims) {
            return Err(DomainError::JoinDenied(JoinDenial::Withdrawn));
        }
        self.consume_ticket(&claims.jti, claims.exp)
    }

    /// Marks a ticket used; a second use is `rtc_ticket_replayed`. `exp` is the ticket's expiry
    /// (Unix seconds): used ids are forgotten once their tickets could not verify anyway.
    pub fn consume_ticket(&mut self, jti: &str, exp: i64) -> Result<(), DomainError> {
        if !self.tickets.consume(jti, exp) {
            return Err(DomainError::TicketReplayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Actor, Notice};
    use crate::domain::error::DomainError;
    use crate::domain::model::{ChannelKind, HistoryVisibility, Session};

    fn claims(jti: &str, exp: i64) -> Claims {
        Claims {
            server_id: "srv".into(),
            channel_id: "ch".into(),
            user_uid: "uid_a".into(),
            device_id: "dev".into(),
            permissions: Permissions::ALL,
            exp,
            jti: jti.into(),
        }
    }

    #[test]
    fn a_void_stops_the_tickets_issued_before_it_only() {
        let mut book = TicketBook::default();
        // All in the same millisecond: the order decides.
        book.issue("before", 160, 100_000);
        book.void_member("srv", "uid_a", 100_000);
        book.issue("after", 160, 100_000);
        assert!(book.is_void(&claims("before", 160)));
        assert!(!book.is_void(&claims("after", 160)));
        // Another server's or another user's void does not count.
        book.issue("elsewhere", 160, 100_000);
        book.void_member("srv_other", "uid_a", 100_001);
        book.void_member("srv", "uid_b", 100_001);
        assert!(!book.is_void(&claims("elsewhere", 160)));
    }

    #[test]
    fn a_device_void_covers_every_server() {
        let mut book = TicketBook::default();
        book.issue("t1", 160, 100_000);
        book.void_device("uid_a", "dev_other", 100_001);
        assert!(!book.is_void(&claims("t1", 160)));
        book.void_device("uid_a", "dev", 100_002);
        assert!(book.is_void(&claims("t1", 160)));
    }

    #[test]
    fn unknown_tickets_count_from_the_start_of_their_second() {
        let mut book = TicketBook::default();
        // Valid from second 100 (exp 160): a void at 100.5 s voids it, one at 99.9 s does not.
        book.void_member("srv", "uid_a", 99_900);
        assert!(!book.is_void(&claims("unknown", 160)));
        book.void_member("srv", "uid_a", 100_500);
        assert!(book.is_void(&claims("unknown", 160)));
    }

    #[test]
    fn sweeping_forgets_expired_tickets_and_old_voids() {
        let mut book = TicketBook::default();
        book.issue("t1", 160, 100_000);
        book.void_member("srv", "uid_a", 100_000);
        book.sweep(159_000);
        assert_eq!(book.tracked(), 1);
        assert!(book.is_void(&claims("t1", 160)));
        book.sweep(161_000);
        assert_eq!(book.tracked(), 0);
        assert!(book.by_member.is_empty());
    }

    #[test]
    fn the_book_is_bounded() {
        let mut book = TicketBook::default();
        for i in 0..MAX_TRACKED_TICKETS {
            book.issue(&format!("t{i}"), 160, 100_000);
        }
        // Full of live tickets: the next one is not numbered, so it counts from its second.
        book.issue("late", 160, 100_000);
        assert_eq!(book.tracked(), MAX_TRACKED_TICKETS);
        book.void_member("srv", "uid_a", 100_000);
        assert!(book.is_void(&claims("late", 160)));
        // Once they expired, there is room again.
        book.issue("later", 260, 170_000);
        assert_eq!(book.tracked(), 1);
    }

    fn community_claims(c: &Community, who: &Actor, jti: &str, exp: i64) -> Claims {
        Claims {
            server_id: "home".into(),
            channel_id: first_channel(c, ChannelKind::Voice).id.into(),
            user_uid: who.user_uid.clone().into(),
            device_id: who.device_id.clone(),
            permissions: crate::rtc::ticket::Permissions::ALL,
            exp,
            jti: jti.into(),
        }
    }

    /// A ticket granted at `now` (ms), valid 60 s.
    fn grant(c: &mut Community, who: &Actor, jti: &str, now: Millis) -> Claims {
        let voice = first_channel(c, ChannelKind::Voice).id;
        let exp = now / 1000 + 60;
        c.grant_ticket(who, "home", &voice, jti, exp, now).unwrap();
        community_claims(c, who, jti, exp)
    }

    #[test]
    fn join_tickets_are_single_use() {
        let mut c = community(HistoryVisibility::Joined);
        c.consume_ticket("jt_1", 100).unwrap();
        assert_eq!(
            c.consume_ticket("jt_1", 100).unwrap_err().code(),
            "rtc_ticket_replayed"
        );
        c.consume_ticket("jt_2", 100).unwrap();
        // Once expired, the id is forgotten (the ticket no longer verifies anyway).
        c.sweep(100_000);
        c.consume_ticket("jt_1", 200).unwrap();
    }

    #[test]
    fn leaving_kicks_bans_and_revokes_void_the_tickets_taken_before() {
        let mut c = booted(HistoryVisibility::Joined, 1);
        let owner = actor("uid_owner");
        let alice = actor("uid_alice");
        let denied = |r: Result<(), DomainError>| r.unwrap_err().code();

        // Leave: the ticket taken before is void; one taken after (which re-admits) works once.
        let before = grant(&mut c, &alice, "jt_before_leave", 100_000);
        c.leave(&alice, "home", 100_000).unwrap();
        assert_eq!(denied(c.redeem_ticket(&before, 100_001)), "rtc_join_denied");
        let after = grant(&mut c, &alice, "jt_after_leave", 100_000);
        c.redeem_ticket(&after, 100_001).unwrap();
        assert_eq!(
            denied(c.redeem_ticket(&after, 100_002)),
            "rtc_ticket_replayed"
        );

        // Kick: the membership ends too.
        let before = grant(&mut c, &alice, "jt_before_kick", 101_000);
        c.kick(&owner, "home", "uid_alice", 101_000).unwrap();
        assert!(c.current_role("home", "uid_alice").is_none());
        assert_eq!(denied(c.redeem_ticket(&before, 101_001)), "rtc_join_denied");

        // Ban.
        let before = grant(&mut c, &alice, "jt_before_ban", 102_000);
        c.ban(&owner, "home", "uid_alice", None, 102_000).unwrap();
        assert_eq!(denied(c.redeem_ticket(&before, 102_001)), "rtc_join_denied");
        c.unban(&owner, "home", "uid_alice", 102_002).unwrap();

        // Revoke: the device's tickets, in every server, and a notice for its sockets.
        let token = "ocs_revoked_token";
        let hash = crate::auth::hash_token(token);
        c.sessions.by_token.insert(
            hash.clone(),
            Session {
                token_hash: hash.clone(),
                user_uid: alice.user_uid.clone(),
                device_id: alice.device_id.clone(),
                created_at: 1,
                expires_at: 10_000_000,
                revoked_at: None,
            },
        );
        let before = grant(&mut c, &alice, "jt_before_revoke", 103_000);
        let other_device = Actor {
            device_id: "dev_other".into(),
            ..alice.clone()
        };
        let other = grant(&mut c, &other_device, "jt_other_device", 103_000);
        let revoked = c.revoke_session(token, 103_000).unwrap();
        assert_eq!(
            revoked.notices,
            vec![Notice::SessionRevoked {
                token_hash: hash,
                user_uid: alice.user_uid.clone().into(),
                device_id: alice.device_id.clone(),
            }]
        );
        assert_eq!(denied(c.redeem_ticket(&before, 103_001)), "rtc_join_denied");
        c.redeem_ticket(&other, 103_001).unwrap();

        // Voids are forgotten once no ticket from before them can still verify.
        let late = community_claims(&c, &alice, "jt_unknown", 104);
        assert_eq!(denied(c.redeem_ticket(&late, 103_500)), "rtc_join_denied");
        c.sweep(200_000);
        let fresh = community_claims(&c, &alice, "jt_unknown_later", 260);
        c.redeem_ticket(&fresh, 200_001).unwrap();
    }

    #[test]
    fn a_reload_keeps_the_voids_of_tickets_taken_before_a_leave() {
        let mut c = booted(HistoryVisibility::Joined, 1);
        let alice = actor("uid_alice");
        let before = grant(&mut c, &alice, "jt_before_reload", 100_000);
        c.leave(&alice, "home", 100_000).unwrap();
        // A failed write makes the authority reload the rest from storage: the fresh state gets
        // what only lived in memory.
        let volatile = c.take_volatile();
        let mut reloaded = booted(HistoryVisibility::Joined, 1);
        reloaded.restore_volatile(volatile);
        assert_eq!(
            reloaded.redeem_ticket(&before, 100_001).unwrap_err().code(),
            "rtc_join_denied"
        );
    }
}
