//! The read rule of history (wire contract B.2, B.3), in one place: may this reader read a
//! message of this channel, given its membership spans, the channel's history visibility and
//! when the message was posted (its position in the message order)? History pages, the
//! realtime resume and reply targets all ask [`readable`]; nothing else decides it.
//!
//! - `public`: anyone, identified or not, reads everything;
//! - `members`: current members read everything;
//! - `joined`: current members read what was posted during their membership spans (a span
//!   opens at the last message seq when the uid joins and closes at the last one when it
//!   leaves), so nothing from before the first join or from while it was away;
//! - a uid that left reads nothing but `public` channels.

use std::collections::HashMap;

use super::Community;
use crate::domain::error::{DomainError, What};
use crate::domain::model::{Channel, HistoryVisibility, Membership, Message, Seq};
use crate::domain::records::Visibility;

/// What a server-wide realtime event is about, kept next to its frame in the resume window so
/// a replay can ask the read rule without decoding the frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Subject {
    /// Server-level state (layout, channels, categories, settings, profiles): what any current
    /// member can read by asking for it, so it replays to current members.
    #[default]
    Server,
    /// A message (its creation or deletion): replays to whoever may read that message
    /// (`epoch`: its MLS epoch, for an encrypted one).
    Message {
        channel_id: String,
        seq: Seq,
        epoch: Option<u64>,
    },
    /// Server-level state as these roles see it (a layout with private channels): replays to
    /// current members of those roles.
    Roles(Vec<crate::domain::model::Role>),
    /// A channel (its creation): replays to current members who may see the channel now.
    Channel { channel_id: String },
}

/// The rule: which messages of a channel with history visibility `history` a reader may read,
/// given its membership row in the channel's server (current or past; `None` when it never
/// was a member, or is anonymous). `None` means none at all.
pub fn readable(history: HistoryVisibility, membership: Option<&Membership>) -> Option<Visibility> {
    let current = membership.filter(|m| m.is_current());
    match history {
        HistoryVisibility::Public => Some(Visibility::All),
        HistoryVisibility::Members => current.map(|_| Visibility::All),
        HistoryVisibility::Joined => current.map(|m| {
            Visibility::Spans(m.spans.iter().map(|s| (s.joined_seq, s.left_seq)).collect())
        }),
    }
}

/// [`readable`] for `channel`: nothing at all of a private channel the reader's role may not
/// see (Part D), whatever its history visibility.
pub fn channel_readable(channel: &Channel, membership: Option<&Membership>) -> Option<Visibility> {
    let role = membership.filter(|m| m.is_current()).map(|m| m.role);
    if !channel.access.viewable_by(role) {
        return None;
    }
    readable(channel.history_visibility, membership)
}

impl Community {
    /// What `uid` (`None`: anonymous) may read of `channel` now ([`channel_readable`]).
    pub fn read_visibility(&self, channel: &Channel, uid: Option<&str>) -> Option<Visibility> {
        let membership = uid.and_then(|uid| self.roster.membership(&channel.server_id, uid));
        self.channel_visibility(channel, membership)
    }

    /// [`channel_readable`], and of an encrypted channel only the epochs the reader was in
    /// its group (`e2ee`): every read path of a message asks this.
    fn channel_visibility(
        &self,
        channel: &Channel,
        membership: Option<&Membership>,
    ) -> Option<Visibility> {
        let seqs = channel_readable(channel, membership)?;
        Some(self.epoch_visibility(channel, membership.map(|m| m.user_uid.as_str()), seqs))
    }

    /// Whether `uid` (`None`: anonymous) sees `channel` at all: in the channel list, its
    /// realtime, its mentions and its voice (a private channel only for its roles).
    pub fn may_view(&self, channel: &Channel, uid: Option<&str>) -> bool {
        let role = uid.and_then(|uid| self.current_role(&channel.server_id, uid));
        channel.access.viewable_by(role)
    }

    /// Whether `uid` may read `message` now: it is not deleted and the rule allows its seq in
    /// its channel.
    pub fn may_read(&self, uid: Option<&str>, message: &Message) -> bool {
        message.deleted_at.is_none()
            && self
                .directory
                .channels
                .get(message.channel_id.as_str())
                .and_then(|channel| self.read_visibility(channel, uid))
                .is_some_and(|visibility| visibility.allows_message(message))
    }

    /// A read cursor of `uid` in `channel` may name `message` only if it is of that channel
    /// and its place is one the reader may read (deleted or not: the cursor shows nothing of
    /// it). Anything else is `message_not_found`, so a cursor cannot probe for messages the
    /// reader may not see.
    pub(super) fn check_cursor(
        &self,
        uid: &str,
        channel: &Channel,
        message: &Message,
    ) -> Result<(), DomainError> {
        let readable = message.channel_id == channel.id
            && self
                .read_visibility(channel, Some(uid))
                .is_some_and(|visibility| visibility.allows_message(message));
        if readable {
            Ok(())
        } else {
            Err(DomainError::NotFound(What::Message))
        }
    }

    /// The reply target of a post by `uid` in `channel` (B.3): `target` is what storage found
    /// for `reply_to_id`, if anything. A target that is missing, deleted, in another channel
    /// or not readable by the replier gets the same `message_not_found`, so a reply cannot
    /// tell a message that exists from one that does not.
    pub(super) fn check_reply_target(
        &self,
        uid: &str,
        channel: &Channel,
        reply_to_id: Option<&str>,
        target: Option<&Message>,
    ) -> Result<(), DomainError> {
        let Some(id) = reply_to_id else {
            return Ok(());
        };
        match target {
            Some(t) if t.id == id && t.channel_id == channel.id && self.may_read(Some(uid), t) => {
                Ok(())
            }
            _ => Err(DomainError::NotFound(What::Message)),
        }
    }

    /// The read rule for replaying events of `server_id` to `uid` (B.3).
    pub fn replay_rule<'a>(&'a self, server_id: &str, uid: &str) -> ReplayRule<'a> {
        ReplayRule {
            community: self,
            server_id: server_id.to_owned(),
            membership: self.roster.membership(server_id, uid),
            channels: HashMap::new(),
        }
    }
}

/// [`readable`] for one reader over a run of events: each channel's visibility is worked out
/// once.
pub struct ReplayRule<'a> {
    community: &'a Community,
    server_id: String,
    membership: Option<&'a Membership>,
    channels: HashMap<String, Option<Visibility>>,
}

impl ReplayRule<'_> {
    /// Whether the reader may get an event about `subject` in a replay: server-level events
    /// while it is a current member, message events when it may read the message (a message
    /// of a channel that no longer exists is not replayed).
    pub fn allows(&mut self, subject: &Subject) -> bool {
        match subject {
            Subject::Server => self.membership.is_some_and(|m| m.is_current()),
            Subject::Roles(roles) => self
                .membership
                .is_some_and(|m| m.is_current() && roles.contains(&m.role)),
            Subject::Channel { channel_id } => {
                let role = self.membership.filter(|m| m.is_current()).map(|m| m.role);
                role.is_some()
                    && self
                        .community
                        .directory
                        .channels
                        .get(channel_id.as_str())
                        .is_some_and(|c| c.access.viewable_by(role))
            }
            Subject::Message {
                channel_id,
                seq,
                epoch,
            } => {
                if !self.channels.contains_key(channel_id) {
                    let visibility = self
                        .community
                        .directory
                        .channels
                        .get(channel_id.as_str())
                        .filter(|c| c.server_id == self.server_id)
                        .and_then(|c| self.community.channel_visibility(c, self.membership));
                    self.channels.insert(channel_id.clone(), visibility);
                }
                self.channels[channel_id]
                    .as_ref()
                    .is_some_and(|v| v.allows(*seq, *epoch))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Actor, Admission, Emitted, NewMessage};
    use crate::domain::error::What;
    use crate::domain::model::ChannelKind;
    use crate::domain::model::{Role, Span};

    fn span(joined_seq: Seq, left_seq: Option<Seq>) -> Span {
        Span {
            joined_seq,
            joined_at: 0,
            left_seq,
            left_at: left_seq.map(|_| 1),
        }
    }

    fn membership(spans: Vec<Span>) -> Membership {
        Membership {
            server_id: "srv".into(),
            user_uid: "uid_r".into(),
            role: Role::Member,
            spans,
        }
    }

    #[test]
    fn a_private_channel_is_readable_by_its_roles_only_whatever_its_history_visibility() {
        let mut channel = first_channel(&community(HistoryVisibility::Public), ChannelKind::Text);
        channel.history_visibility = HistoryVisibility::Public;
        channel.access.view_min_role = Some(Role::Moderator);
        let member = membership(vec![span(0, None)]);
        let moderator = Membership {
            role: Role::Moderator,
            ..member.clone()
        };
        let left = membership(vec![span(0, Some(3))]);
        assert_eq!(
            channel_readable(&channel, None),
            None,
            "not even public reaches anonymous"
        );
        assert_eq!(channel_readable(&channel, Some(&member)), None);
        assert_eq!(channel_readable(&channel, Some(&left)), None);
        assert_eq!(
            channel_readable(&channel, Some(&moderator)),
            Some(Visibility::All)
        );
        channel.access.view_min_role = None;
        assert_eq!(channel_readable(&channel, None), Some(Visibility::All));
    }

    fn allowed(visibility: Option<Visibility>, seqs: std::ops::RangeInclusive<Seq>) -> Vec<Seq> {
        seqs.filter(|s| visibility.as_ref().is_some_and(|v| v.allows(*s, None)))
            .collect()
    }

    #[test]
    fn joined_channels_show_the_spans_of_a_current_member_only() {
        // Joined after seq 2, left at 4, back after 7.
        let back = membership(vec![span(2, Some(4)), span(7, None)]);
        let joined = readable(HistoryVisibility::Joined, Some(&back));
        assert_eq!(allowed(joined, 1..=9), vec![3, 4, 8, 9]);
        // Away now: nothing, not even the old spans.
        let away = membership(vec![span(2, Some(4))]);
        assert_eq!(readable(HistoryVisibility::Joined, Some(&away)), None);
        assert_eq!(readable(HistoryVisibility::Joined, None), None);
    }

    #[test]
    fn members_channels_are_whole_for_current_members_and_public_for_all() {
        let current = membership(vec![span(5, None)]);
        let away = membership(vec![span(5, Some(6))]);
        assert_eq!(
            readable(HistoryVisibility::Members, Some(&current)),
            Some(Visibility::All)
        );
        assert_eq!(readable(HistoryVisibility::Members, Some(&away)), None);
        assert_eq!(readable(HistoryVisibility::Members, None), None);
        for who in [Some(&current), Some(&away), None] {
            assert_eq!(
                readable(HistoryVisibility::Public, who),
                Some(Visibility::All)
            );
        }
    }

    /// A plaintext reply naming `reply_to_id`, with what storage found for it (`target`).
    fn plain_reply(body: &str, reply_to_id: Option<&str>, target: Option<&Message>) -> NewMessage {
        NewMessage {
            reply_to: target.cloned(),
            reply_to_id: reply_to_id.map(str::to_owned),
            ..plain(body, None)
        }
    }

    /// Posts and returns the stored message and its event.
    fn post_event(
        c: &mut Community,
        who: &Actor,
        channel: &str,
        new: NewMessage,
    ) -> (Message, Emitted) {
        let out = c.post_message(who, channel, new, 10).unwrap();
        (stored_message(&out.records), out.events[0].clone())
    }

    #[test]
    fn pages_resume_and_replies_ask_the_same_rule() {
        let mut c = booted(HistoryVisibility::Joined, 1);
        let general = first_channel(&c, ChannelKind::Text);
        let alice = actor("uid_alice");
        let bob = actor("uid_bob");
        let (before, event) = post_event(
            &mut c,
            &alice,
            &general.id,
            plain_reply("before", None, None),
        );
        assert_eq!(
            event.subject,
            Subject::Message {
                channel_id: general.id.clone().into(),
                epoch: None,
                seq: before.seq
            }
        );
        c.admit(&bob, "home", Admission::Connect, 11).unwrap();
        let (after, after_event) = post_event(
            &mut c,
            &alice,
            &general.id,
            plain_reply("after", None, None),
        );

        // The page.
        let access = c.history_access(Some(&bob), &general.id, 12).unwrap().value;
        assert!(!access.visibility.allows_message(&before));
        assert!(access.visibility.allows_message(&after));
        // The resume.
        let mut rule = c.replay_rule("home", "uid_bob");
        assert!(!rule.allows(&event.subject));
        assert!(rule.allows(&after_event.subject));
        assert!(rule.allows(&Subject::Server));
        let mut alices = c.replay_rule("home", "uid_alice");
        assert!(alices.allows(&event.subject));
        // A channel of another server named in a subject is not replayed on this one.
        let mut elsewhere = c.replay_rule("srv_other", "uid_alice");
        assert!(!elsewhere.allows(&event.subject));
        // The reply.
        assert!(!c.may_read(Some("uid_bob"), &before));
        assert!(c.may_read(Some("uid_bob"), &after));
        let refused = c
            .post_message(
                &bob,
                &general.id,
                plain_reply("re", Some(&before.id), Some(&before)),
                13,
            )
            .unwrap_err();
        assert_eq!(refused, DomainError::NotFound(What::Message));

        // After leaving, nothing of the joined channel replays, not even server-level events.
        c.leave(&bob, "home", 14).unwrap();
        let mut rule = c.replay_rule("home", "uid_bob");
        assert!(!rule.allows(&after_event.subject));
        assert!(!rule.allows(&Subject::Server));
    }

    #[test]
    fn unreadable_missing_foreign_and_deleted_targets_get_one_answer_and_join_nobody() {
        let mut c = booted(HistoryVisibility::Joined, 1);
        let general = first_channel(&c, ChannelKind::Text);
        let alice = actor("uid_alice");
        let (target, _) = post_event(
            &mut c,
            &alice,
            &general.id,
            plain_reply("target", None, None),
        );
        let carol = actor("uid_carol");
        let missing = c
            .post_message(
                &carol,
                &general.id,
                plain_reply("re", Some("msg_999"), None),
                20,
            )
            .unwrap_err();
        assert_eq!(missing, DomainError::NotFound(What::Message));
        // Carol's first contact would make her a member from now on: the target is before that.
        let unreadable = c
            .post_message(
                &carol,
                &general.id,
                plain_reply("re", Some(&target.id), Some(&target)),
                20,
            )
            .unwrap_err();
        assert_eq!(unreadable, missing);
        assert!(
            c.roster.membership("home", "uid_carol").is_none(),
            "a refused post joins nobody"
        );
        // In another channel (even one alice reads), a different id, or deleted: the same.
        let mut elsewhere = target.clone();
        elsewhere.channel_id = "ch_other".into();
        let mut renamed = target.clone();
        renamed.id = "msg_12345".into();
        let mut deleted = target.clone();
        deleted.deleted_at = Some(15);
        for t in [&elsewhere, &renamed, &deleted] {
            let refused = c
                .post_message(
                    &alice,
                    &general.id,
                    plain_reply("re", Some(&target.id), Some(t)),
                    21,
                )
                .unwrap_err();
            assert_eq!(refused, missing);
        }
        // The real one, for its reader.
        let (reply, event) = post_event(
            &mut c,
            &alice,
            &general.id,
            plain_reply("re", Some(&target.id), Some(&target)),
        );
        assert_eq!(reply.reply_to_id.as_deref(), Some(target.id.as_str()));
        assert!(event.payload.contains("\"preview_text\":\"target\""));
    }
}
