//! Messages: what a reader may see of a channel's history (decided before storage is asked),
//! posting (the checks, mentions, the reply target, the event) and deleting, and rendering a
//! stored message for a reader. Messages themselves live in storage; only the order counter
//! (`last_seq`) is kept here.

use super::{Actor, Admission, Community, HistoryAccess, NewMessage, Outcome, Subject, Viewer};
use crate::domain::error::{DomainError, Needs, Readable, What};
use crate::domain::model::Channel;
use crate::domain::model::{
    ChannelKind, Content, Encryption, Envelope, HistoryVisibility, Mention, Message, Millis, Role,
    Utf16Range, message_id,
};
use crate::domain::records::{Record, Visibility};
use crate::domain::views::{
    ActionPermissions, AttachmentItem, MessageItem, MessageOut, ReplyTo, Urls,
};
use crate::domain::{limits, text, views};

impl Community {
    /// Decides what `actor` may read of a channel (wire contract B.2). Anonymous readers see
    /// `public` channels only; members see `members` channels whole and `joined` channels for
    /// their membership spans; a uid that left sees nothing but `public` channels. A uid this
    /// server has never seen is admitted first (`Admission::FirstContact`), which is the only
    /// case that changes the state.
    pub fn history_access(
        &mut self,
        actor: Option<&Actor>,
        channel_id: &str,
        now: Millis,
    ) -> Result<Outcome<HistoryAccess>, DomainError> {
        if let Some(decided) = self.history_access_now(actor, channel_id) {
            return decided.map(Outcome::pure);
        }
        // Only an identified first contact of an existing channel is left undecided.
        let Some(actor) = actor else {
            return Err(DomainError::IdentityRequired(Readable::Channel));
        };
        let server_id = self.directory.channel(channel_id)?.server_id.clone();
        let mut records = Vec::new();
        self.admit_inner(
            &server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            &mut records,
        )?;
        let decided = self
            .history_access_now(Some(actor), channel_id)
            .unwrap_or(Err(DomainError::NotAMember));
        match decided {
            Ok(access) => Ok(Outcome::stored(access, records)),
            Err(e) => Err(self.refuse_after_join(&server_id, &actor.user_uid, &records, e)),
        }
    }

    /// [`Community::history_access`] for a reader it can decide without changing anything:
    /// `None` when the reader is a first contact of the channel's server (the command admits
    /// it). Shards ask this on their own thread, so a history page of a member never waits for
    /// the sequencer.
    pub fn history_access_now(
        &self,
        actor: Option<&Actor>,
        channel_id: &str,
    ) -> Option<Result<HistoryAccess, DomainError>> {
        let channel = match self.directory.channel(channel_id) {
            Ok(channel) => channel.clone(),
            Err(e) => return Some(Err(e)),
        };
        // A private channel does not exist for whoever may not see it.
        if !self.may_view(&channel, actor.map(|a| a.user_uid.as_str()))
            && actor.is_none_or(|a| {
                self.roster
                    .membership(&channel.server_id, &a.user_uid)
                    .is_some()
            })
        {
            return Some(Err(DomainError::NotFound(What::Channel)));
        }
        let public = channel.history_visibility == HistoryVisibility::Public;
        let Some(actor) = actor else {
            if public {
                return Some(Ok(HistoryAccess {
                    channel,
                    visibility: Visibility::All,
                    viewer: None,
                }));
            }
            return Some(Err(DomainError::IdentityRequired(Readable::Channel)));
        };
        let role = match self.roster.membership(&channel.server_id, &actor.user_uid) {
            Some(m) if m.is_current() => Some(m.role),
            Some(_) if public => None,
            Some(_) => return Some(Err(DomainError::NotAMember)),
            None => return None,
        };
        let visibility = self.read_visibility(&channel, Some(&actor.user_uid));
        Some(
            visibility
                .map(|visibility| HistoryAccess {
                    channel,
                    visibility,
                    viewer: role.map(|role| Viewer {
                        user_uid: actor.user_uid.clone().into(),
                        role,
                    }),
                })
                .ok_or(DomainError::NotAMember),
        )
    }

    /// Renders a stored message for a reader (see [`render`]).
    pub fn render(
        &self,
        message: &Message,
        reply_target: Option<&Message>,
        visibility: &Visibility,
        viewer: Option<&Viewer>,
    ) -> MessageItem {
        render(self.urls(), message, reply_target, visibility, viewer)
    }

    /// `POST /v1/channels/{id}/messages`; emits `chat.message.created` to the whole server.
    pub fn post_message(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        new: NewMessage,
        now: Millis,
    ) -> Result<Outcome<MessageItem>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        check_message_text(&new)?;
        let channel = self.directory.channel(channel_id)?.clone();
        if channel.kind != ChannelKind::Text {
            return Err(DomainError::NotATextChannel);
        }
        match (&new.content, channel.encryption) {
            (Content::Plain { .. }, Encryption::E2ee) => {
                return Err(DomainError::PlaintextNotAllowed);
            }
            (Content::Envelope(_), Encryption::None) => {
                return Err(DomainError::EnvelopeNotAllowed);
            }
            (Content::Envelope(envelope), Encryption::E2ee) => {
                self.check_envelope(actor, &channel, envelope)?;
            }
            (Content::Plain { body }, Encryption::None) => {
                limits::check_body_size(body, self.settings().max_message_bytes)?;
                if body.trim().is_empty() && new.attachments.is_empty() {
                    return Err(DomainError::EmptyMessage);
                }
            }
        }
        limits::check_attachment_count(new.attachments.len())?;
        let mut records = Vec::new();
        let role = self.admit_inner(
            &channel.server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            &mut records,
        )?;
        if let Err(e) = self.may_post(&channel, &actor.user_uid, role, now) {
            return Err(self.refuse_after_join(&channel.server_id, &actor.user_uid, &records, e));
        }
        // After the admission: a first contact reads from its join on.
        if let Err(e) = self.check_reply_target(
            &actor.user_uid,
            &channel,
            new.reply_to_id.as_deref(),
            new.reply_to.as_ref(),
        ) {
            return Err(self.refuse_after_join(&channel.server_id, &actor.user_uid, &records, e));
        }
        let mentions = match &new.content {
            Content::Plain { body } => self.mentions_in(body, &channel, &actor.user_uid, role),
            Content::Envelope(_) => Vec::new(),
        };
        self.last_seq += 1;
        let message = Message {
            seq: self.last_seq,
            id: message_id(self.last_seq),
            server_id: channel.server_id.clone().into(),
            channel_id: channel_id.to_owned(),
            author_uid: actor.user_uid.clone().into(),
            author_device_id: actor.device_id.clone(),
            content: new.content,
            reply_to_id: new.reply_to_id.clone(),
            mentions,
            attachments: new.attachments,
            created_at: now,
            deleted_at: None,
        };
        // The event is what every member sees, so it is rendered for no one in particular
        // (`can_delete` left out: each client decides "my own message" itself); the author's
        // own answer carries the author's permissions.
        let shared = self.render(&message, new.reply_to.as_ref(), &Visibility::All, None);
        let value = MessageItem {
            action_permissions: permissions(
                &message,
                Some(&Viewer {
                    user_uid: actor.user_uid.clone().into(),
                    role,
                }),
            ),
            ..shared.clone()
        };
        let subject = Subject::Message {
            channel_id: channel_id.to_owned(),
            seq: message.seq,
            epoch: message.epoch(),
        };
        let audience = self.message_audience(&channel, message.epoch());
        records.push(Record::Message(message));
        let mut event = self.counted_event(
            &mut records,
            &channel.server_id,
            "chat.message.created",
            &MessageOut { message: shared },
            now,
        );
        event.subject = subject;
        event.audience = audience;
        Ok(Outcome::published(value, records, vec![event]))
    }

    /// The mentions of `body` posted by `author` (with `role`) in `channel`: a user mention
    /// the target does not permit from this author is not one ([`Community::may_mention`]),
    /// and a user is named as members of the server see it.
    pub(super) fn mentions_in(
        &self,
        body: &str,
        channel: &Channel,
        author: &str,
        role: Role,
    ) -> Vec<Mention> {
        let server_id = channel.server_id.as_str();
        text::parse_mentions(body)
            .into_iter()
            .filter(|span| {
                // Nobody is mentioned where it may not see, nor against its privacy.
                span.kind != text::MentionKind::User
                    || (self.may_mention(server_id, author, role, &span.target)
                        && self.may_view(channel, Some(&span.target)))
            })
            .map(|span| {
                let (kind, target_id, display_text) = match span.kind {
                    text::MentionKind::User => (
                        "user",
                        span.target.clone(),
                        format!("@{}", self.display_name_in(server_id, &span.target)),
                    ),
                    text::MentionKind::Here | text::MentionKind::Channel => {
                        ("channel", channel.id.to_string(), span.token.clone())
                    }
                };
                Mention {
                    kind: kind.to_owned(),
                    token: span.token,
                    target_id,
                    display_text,
                    range: Utf16Range {
                        start: span.start,
                        end: span.end,
                    },
                }
            })
            .collect()
    }

    /// `DELETE /v1/channels/{id}/messages/{message_id}` (the author, or a moderator or above);
    /// emits `chat.message.deleted`.
    pub fn delete_message(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        message: &Message,
        now: Millis,
    ) -> Result<Outcome<views::MessageDeleted>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        let channel = self.directory.channel(channel_id)?.clone();
        if message.channel_id != channel_id {
            return Err(DomainError::NotFound(What::Message));
        }
        let role = self
            .current_role(&channel.server_id, &actor.user_uid)
            .ok_or(DomainError::NotAMember)?;
        if message.author_uid != actor.user_uid && !role.at_least(Role::Moderator) {
            return Err(DomainError::Forbidden(Needs::AuthorOrModerator));
        }
        let deleted_at = message.deleted_at.unwrap_or(now);
        let value = views::MessageDeleted {
            deleted: true,
            server_id: channel.server_id.clone().into(),
            channel_id: channel_id.to_owned(),
            message_id: message.id.clone(),
            deleted_by_uid: actor.user_uid.clone().into(),
            deleted_at: views::rfc3339(deleted_at),
        };
        if message.deleted_at.is_some() {
            return Ok(Outcome::pure(value));
        }
        let mut records = vec![Record::MessageDeleted {
            id: message.id.clone(),
            deleted_at: now,
        }];
        let mut event = self.server_event(
            &mut records,
            &channel.server_id,
            "chat.message.deleted",
            &value,
            now,
        );
        event.subject = Subject::Message {
            channel_id: channel_id.to_owned(),
            seq: message.seq,
            epoch: message.epoch(),
        };
        event.audience = self.message_audience(&channel, message.epoch());
        Ok(Outcome::published(value, records, vec![event]))
    }
}

/// The text rule over everything a new message carries: the body (or the envelope's fields)
/// and the attachments' file names.
fn check_message_text(new: &NewMessage) -> Result<(), DomainError> {
    match &new.content {
        Content::Plain { body } => limits::text_field("body", body)?,
        Content::Envelope(Envelope {
            ciphertext,
            sender_device_id,
            ..
        }) => {
            limits::text_field("envelope.ciphertext", ciphertext)?;
            limits::text_field("envelope.sender_device_id", sender_device_id)?;
        }
    }
    for attachment in &new.attachments {
        limits::text_field("file_name", &attachment.file_name)?;
    }
    Ok(())
}

/// Renders stored messages for a reader: reply previews (unavailable when the target is
/// deleted or outside what the reader may see), attachment URLs, and the reader's
/// permissions on each.
pub fn render(
    urls: &Urls,
    message: &Message,
    reply_target: Option<&Message>,
    visibility: &Visibility,
    viewer: Option<&Viewer>,
) -> MessageItem {
    let reply_to = message.reply_to_id.as_ref().map(|id| match reply_target {
        Some(t) if t.deleted_at.is_none() && visibility.allows_message(t) => ReplyTo {
            message_id: id.clone(),
            author_uid: Some(t.author_uid.clone()),
            preview_text: match &t.content {
                Content::Plain { body } => text::preview_text(body),
                Content::Envelope(_) => String::new(),
            },
            is_unavailable: false,
        },
        _ => ReplyTo {
            message_id: id.clone(),
            author_uid: None,
            preview_text: String::new(),
            is_unavailable: true,
        },
    });
    let (body, envelope) = match &message.content {
        Content::Plain { body } => (Some(body.clone()), None),
        Content::Envelope(envelope) => (None, Some(envelope.clone())),
    };
    MessageItem {
        id: message.id.clone(),
        channel_id: message.channel_id.clone(),
        server_id: message.server_id.clone(),
        author_uid: message.author_uid.clone(),
        body,
        envelope,
        created_at: views::rfc3339(message.created_at),
        reply_to,
        mentions: message.mentions.clone(),
        attachments: message
            .attachments
            .iter()
            .map(|a| AttachmentItem::of(a, urls))
            .collect(),
        action_permissions: permissions(message, viewer),
    }
}

/// What `viewer` may do with `message`.
pub fn permissions(message: &Message, viewer: Option<&Viewer>) -> ActionPermissions {
    // An anonymous read is what the desktop client does before it acts with its identity:
    // it gets what any member may do.
    let Some(v) = viewer else {
        return ActionPermissions {
            can_react: true,
            can_reply: true,
            can_mark_unread: true,
            can_pin: false,
            can_delete: None,
        };
    };
    ActionPermissions {
        can_react: true,
        can_reply: true,
        can_mark_unread: true,
        can_pin: v.role.at_least(Role::Moderator),
        can_delete: Some(v.user_uid == message.author_uid || v.role.at_least(Role::Moderator)),
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Admission, ProfileChange};
    use crate::domain::error::DomainError;
    use crate::domain::history::MemoryHistory;
    use crate::domain::model::{ChannelKind, Encryption, HistoryVisibility, Message};
    use crate::domain::records::{Record, Visibility};

    /// The read path decides every reader the command would, the same way, except a first
    /// contact (which the command admits): a history page of a member never needs a command.
    #[test]
    fn history_access_now_decides_what_the_command_decides_without_changing_anything() {
        let mut c = community(HistoryVisibility::Joined);
        let alice = actor("uid_alice");
        let channel = text_channel(&mut c, "home", &alice);
        // A member: decided, with the same answer as the command.
        let now = c
            .history_access_now(Some(&alice), &channel)
            .expect("decided");
        let by_command = c.history_access(Some(&alice), &channel, 20).unwrap();
        assert!(
            by_command.records.is_empty(),
            "a member's access changes nothing"
        );
        assert_eq!(now, Ok(by_command.value));
        // Anonymous readers of a non-public channel and unknown channels: decided refusals.
        assert!(matches!(c.history_access_now(None, &channel), Some(Err(_))));
        assert!(matches!(
            c.history_access_now(Some(&alice), "ch_missing"),
            Some(Err(_))
        ));
        // A first contact is left to the command, which admits it.
        let bob = actor("uid_bob");
        assert_eq!(c.history_access_now(Some(&bob), &channel), None);
        let admitted = c.history_access(Some(&bob), &channel, 30).unwrap();
        assert!(!admitted.records.is_empty(), "the first contact joined");
        assert!(c.history_access_now(Some(&bob), &channel).is_some());
        // One who left is decided (refused) without a command.
        c.leave(&bob, "home", 40).unwrap();
        assert_eq!(
            c.history_access_now(Some(&bob), &channel),
            Some(Err(DomainError::NotAMember))
        );
        assert_eq!(
            c.history_access(Some(&bob), &channel, 41).map(|o| o.value),
            Err(DomainError::NotAMember)
        );
    }

    #[test]
    fn a_later_joiner_does_not_see_earlier_messages_in_a_joined_channel() {
        let mut c = community(HistoryVisibility::Joined);
        let mut history = MemoryHistory::default();
        let alice = actor("uid_alice");
        let channel = text_channel(&mut c, "home", &alice);
        post(&mut c, &mut history, &alice, &channel, "before bob", None);
        let bob = actor("uid_bob");
        assert_eq!(
            read(&mut c, &history, Some(&bob), &channel).unwrap(),
            Vec::<String>::new()
        );
        post(&mut c, &mut history, &alice, &channel, "after bob", None);
        assert_eq!(
            read(&mut c, &history, Some(&bob), &channel).unwrap(),
            vec!["after bob"]
        );
        assert_eq!(
            read(&mut c, &history, Some(&alice), &channel).unwrap(),
            vec!["before bob", "after bob"]
        );
        // Anonymous readers get nothing from a non-public channel.
        assert_eq!(
            read(&mut c, &history, None, &channel).unwrap_err().status(),
            401
        );
    }

    #[test]
    fn members_and_public_visibility() {
        let mut c = community(HistoryVisibility::Members);
        let mut history = MemoryHistory::default();
        let alice = actor("uid_alice");
        let channel = text_channel(&mut c, "home", &alice);
        post(&mut c, &mut history, &alice, &channel, "early", None);
        assert_eq!(
            read(&mut c, &history, Some(&actor("uid_late")), &channel).unwrap(),
            vec!["early"]
        );
        assert_eq!(
            read(&mut c, &history, None, &channel).unwrap_err().status(),
            401
        );

        let mut p = community(HistoryVisibility::Public);
        let mut history = MemoryHistory::default();
        let channel = text_channel(&mut p, "home", &alice);
        post(&mut p, &mut history, &alice, &channel, "hello world", None);
        assert_eq!(
            read(&mut p, &history, None, &channel).unwrap(),
            vec!["hello world"]
        );
        // Anonymous reads of a server with public channels work; they join nobody.
        assert!(p.channels_of(None, "home", 1).is_ok());
        assert!(p.members(None, "home", 1).unwrap().records.is_empty());
    }

    #[test]
    fn replies_mentions_and_permissions() {
        let mut c = community(HistoryVisibility::Joined);
        let mut history = MemoryHistory::default();
        let alice = actor("uid_alice");
        let bob = actor("uid_bob");
        let channel = text_channel(&mut c, "home", &alice);
        // Bob is a member before the message he replies to (a reply names only what the replier
        // may read).
        c.admit(&bob, "home", Admission::Connect, 1).unwrap();
        c.put_profile(
            &bob,
            ProfileChange {
                display_name: Some("Bob".into()),
                ..Default::default()
            },
            5,
        )
        .unwrap();
        let first = post(
            &mut c,
            &mut history,
            &alice,
            &channel,
            "first   message\nwith lines",
            None,
        );
        let out = c
            .post_message(
                &bob,
                &channel,
                plain("😀 @uid_alice look @here", Some(&first)),
                20,
            )
            .unwrap();
        let m = out.value;
        let reply = m.reply_to.as_ref().unwrap();
        assert_eq!(reply.message_id, first.id);
        assert_eq!(reply.author_uid.as_deref(), Some("uid_alice"));
        assert_eq!(reply.preview_text, "first message with lines");
        assert!(!reply.is_unavailable);
        assert_eq!(m.mentions.len(), 2);
        assert_eq!(
            (
                m.mentions[0].kind.as_str(),
                m.mentions[0].target_id.as_str()
            ),
            ("user", "uid_alice")
        );
        // UTF-16: the emoji is two code units, then a space.
        assert_eq!(
            (m.mentions[0].range.start, m.mentions[0].range.end),
            (3, 3 + "@uid_alice".len())
        );
        assert_eq!(
            (
                m.mentions[1].token.as_str(),
                m.mentions[1].target_id.as_str()
            ),
            ("@here", channel.as_str())
        );
        assert_eq!(
            m.action_permissions.can_delete,
            Some(true),
            "the author may delete"
        );
        // Others may not delete; a moderator may.
        let stored = history
            .get(&m.id)
            .cloned()
            .unwrap_or_else(|| stored_message(&out.records));
        assert_eq!(
            c.delete_message(&alice, &channel, &stored, 30)
                .unwrap_err()
                .status(),
            403
        );
        let deleted = c.delete_message(&bob, &channel, &stored, 30).unwrap();
        assert_eq!(deleted.events[0].kind, "chat.message.deleted");
        // A deleted reply target renders as unavailable.
        let mut gone = first.clone();
        gone.deleted_at = Some(40);
        let rendered = c.render(&m_as_message(&stored), Some(&gone), &Visibility::All, None);
        assert!(rendered.reply_to.unwrap().is_unavailable);
    }

    fn m_as_message(m: &Message) -> Message {
        m.clone()
    }

    #[test]
    fn oversize_and_wrong_kind_posts_are_refused() {
        let mut c = community(HistoryVisibility::Joined);
        let alice = actor("uid_alice");
        let channel = text_channel(&mut c, "home", &alice);
        let big = "x".repeat(4001);
        let err = c
            .post_message(&alice, &channel, plain(big, None), 1)
            .unwrap_err();
        assert_eq!((err.status(), err.code()), (413, "payload_too_large"));
        let voice = c.channels_of(Some(&alice), "home", 1).unwrap().value.groups[1].channels[0]
            .id
            .clone();
        let err = c
            .post_message(&alice, &voice, plain("hi", None), 1)
            .unwrap_err();
        assert_eq!(err.code(), "not_a_text_channel");
        let owner = actor("uid_owner");
        let e2ee = c
            .create_channel(
                &owner,
                "home",
                "secret",
                ChannelKind::Text,
                None,
                None,
                Some(Encryption::E2ee),
                2,
            )
            .unwrap()
            .value
            .channel
            .id;
        let err = c
            .post_message(&alice, &e2ee, plain("hi", None), 3)
            .unwrap_err();
        assert_eq!(err.code(), "plaintext_not_allowed");
    }

    #[test]
    fn new_message_events_are_counted_not_logged() {
        let mut c = community(HistoryVisibility::Joined);
        let mut history = MemoryHistory::default();
        let alice = actor("uid_alice");
        let channel = text_channel(&mut c, "home", &alice);
        let before = c.last_event_id("home");
        let out = c
            .post_message(&alice, &channel, plain("hi", None), 1)
            .unwrap();
        assert_eq!(out.events[0].event_id, Some(before.next()));
        assert!(out.records.iter().all(|r| !matches!(r, Record::Event(_))));
        assert!(out.records.contains(&Record::LastEventId {
            server_id: "home".into(),
            event_id: before.next()
        }));
        let _ = &mut history;
    }
}
