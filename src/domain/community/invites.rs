//! Invites (wire contract Part D): an owner or admin makes one with an expiry and a use limit,
//! lists and revokes them; anyone signed in redeems a code to join. The code (24 random bytes,
//! base64url) is handed out once, at creation; only its hash is kept, so the table is no list
//! of ways in. Redemptions are decided one at a time by the sequencer, so the use limit holds
//! however many arrive at once. An invite-only server (`join_policy: invite`) is entered by
//! redeeming one and no other way (`Community::admit_inner`).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Actor, Admission, Community, Outcome};
use crate::domain::error::{DomainError, Limit, What};
use crate::domain::ids::ServerId;
use crate::domain::limits::{
    INVITES_PAGE, MAX_INVITE_LIFETIME_MS, MAX_INVITE_USES, MAX_INVITES_PER_SERVER,
    MIN_INVITE_LIFETIME_MS,
};
use crate::domain::model::{Invite, Millis};
use crate::domain::records::Record;
use crate::domain::views::{InviteCreated, InviteItem, InvitePage, Redeemed, rfc3339};

/// Random bytes in an invite code (Part D).
pub const INVITE_CODE_BYTES: usize = 24;

/// Invites by id, and the id of each by its code's hash.
#[derive(Debug, Default)]
pub struct Invites {
    pub(super) by_id: HashMap<String, Invite>,
    pub(super) by_code_hash: HashMap<String, String>,
}

impl Invites {
    pub(super) fn insert(&mut self, invite: Invite) {
        self.by_code_hash
            .insert(invite.code_hash.clone(), invite.id.clone());
        self.by_id.insert(invite.id.clone(), invite);
    }

    /// Forgets invites that can no longer let anyone in for a reason time will not undo
    /// (revoked or expired); a used-up one stays listed until it expires.
    pub(super) fn sweep(&mut self, now: Millis) {
        let by_code_hash = &mut self.by_code_hash;
        self.by_id.retain(|_, i| {
            let keep = i.revoked_at.is_none() && i.expires_at > now;
            if !keep {
                by_code_hash.remove(&i.code_hash);
            }
            keep
        });
    }

    fn of_server<'a>(
        &'a self,
        server_id: &'a str,
        now: Millis,
    ) -> impl Iterator<Item = &'a Invite> + 'a {
        self.by_id.values().filter(move |i| {
            i.server_id == server_id && i.revoked_at.is_none() && i.expires_at > now
        })
    }
}

fn item(i: &Invite) -> InviteItem {
    InviteItem {
        invite_id: i.id.clone(),
        server_id: i.server_id.clone(),
        created_by_uid: i.created_by_uid.clone(),
        expires_at: rfc3339(i.expires_at),
        max_uses: i.max_uses,
        use_count: i.use_count,
        created_at: rfc3339(i.created_at),
    }
}

impl Community {
    /// `POST /v1/servers/{id}/invites` (owner or admin): an invite valid until `expires_at`
    /// (1 minute to 30 days ahead) for `max_uses` (1 to 1000) joins. The value holds the code,
    /// the only time it is shown.
    pub fn create_invite(
        &mut self,
        actor: &Actor,
        server_id: &str,
        expires_at: Millis,
        max_uses: u32,
        now: Millis,
    ) -> Result<Outcome<InviteCreated>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        let lifetime = expires_at.saturating_sub(now);
        if !(MIN_INVITE_LIFETIME_MS..=MAX_INVITE_LIFETIME_MS).contains(&lifetime) {
            return Err(DomainError::InvalidInviteExpiry);
        }
        if !(1..=MAX_INVITE_USES).contains(&max_uses) {
            return Err(DomainError::InvalidInviteUses);
        }
        let mut records = self.require_admin(server_id, actor, now)?;
        if self.invites.of_server(server_id, now).count() >= MAX_INVITES_PER_SERVER {
            return Err(DomainError::LimitReached(Limit::InvitesPerServer));
        }
        let code = URL_SAFE_NO_PAD.encode(self.entropy.bytes::<INVITE_CODE_BYTES>());
        let invite = Invite {
            id: self.entropy.id("inv"),
            server_id: ServerId::from(server_id),
            code_hash: crate::auth::hash_token(&code),
            created_by_uid: actor.user_uid.clone(),
            expires_at,
            max_uses,
            use_count: 0,
            created_at: now,
            revoked_at: None,
        };
        records.push(Record::Invite(invite.clone()));
        let created = InviteCreated {
            item: item(&invite),
            code,
        };
        self.invites.insert(invite);
        Ok(Outcome::stored(created, records))
    }

    /// `GET /v1/servers/{id}/invites?cursor=` (owner or admin): the live invites (neither
    /// revoked nor expired; used-up ones until they expire), newest first,
    /// [`INVITES_PAGE`] a page. `after` is the `invite_id` of the last one of the page
    /// before. Codes are never listed.
    pub fn list_invites(
        &self,
        actor: &Actor,
        server_id: &str,
        after: Option<&str>,
        now: Millis,
    ) -> Result<InvitePage, DomainError> {
        self.directory.server(server_id)?;
        self.require_admin_now(server_id, actor)?;
        let mut invites: Vec<&Invite> = self.invites.of_server(server_id, now).collect();
        invites.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        let start = match after {
            None => 0,
            Some(after) => invites
                .iter()
                .position(|i| i.id == after)
                .map(|p| p + 1)
                .ok_or(DomainError::NotFound(What::Invite))?,
        };
        let page: Vec<InviteItem> = invites
            .iter()
            .skip(start)
            .take(INVITES_PAGE)
            .map(|i| item(i))
            .collect();
        let next_cursor = (start + page.len() < invites.len())
            .then(|| page.last().map(|i| i.invite_id.clone()))
            .flatten();
        Ok(InvitePage {
            invites: page,
            next_cursor,
        })
    }

    /// `DELETE /v1/servers/{id}/invites/{invite_id}` (owner or admin). Revoking a revoked,
    /// expired or forgotten invite of the server is a no-op; one of another server is not
    /// found.
    pub fn revoke_invite(
        &mut self,
        actor: &Actor,
        server_id: &str,
        invite_id: &str,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        let mut records = self.require_admin(server_id, actor, now)?;
        let Some(invite) = self.invites.by_id.get_mut(invite_id) else {
            return Ok(Outcome::stored((), records));
        };
        if invite.server_id != server_id {
            return Err(DomainError::NotFound(What::Invite));
        }
        if invite.revoked_at.is_none() {
            invite.revoked_at = Some(now);
            records.push(Record::Invite(invite.clone()));
        }
        Ok(Outcome::stored((), records))
    }

    /// `POST /v1/invites/{code}/redeem`: a live invite makes the caller a member (one use);
    /// a current member spends no use. Banned: 403. Expired, revoked or used up: 410.
    pub fn redeem_invite(
        &mut self,
        actor: &Actor,
        code: &str,
        now: Millis,
    ) -> Result<Outcome<Redeemed>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        let hash = crate::auth::hash_token(code);
        let invite = self
            .invites
            .by_code_hash
            .get(&hash)
            .and_then(|id| self.invites.by_id.get(id))
            .ok_or(DomainError::NotFound(What::Invite))?;
        let server_id = invite.server_id.clone();
        let redeemed = Redeemed {
            server_id: server_id.clone(),
            membership_state: "active",
        };
        if self.is_banned(&server_id, &actor.user_uid, now) {
            return Err(DomainError::Banned);
        }
        if self
            .roster
            .current_role(&server_id, &actor.user_uid)
            .is_some()
        {
            return Ok(Outcome::pure(redeemed));
        }
        if !invite.is_live(now) {
            return Err(DomainError::InviteExpired);
        }
        let mut invite = invite.clone();
        let mut records = Vec::new();
        self.admit_inner(
            &server_id,
            &actor.user_uid,
            Admission::Invite,
            now,
            &mut records,
        )?;
        invite.use_count += 1;
        records.push(Record::Invite(invite.clone()));
        self.invites.insert(invite);
        Ok(Outcome::stored(redeemed, records))
    }
}
