//! Per-reader channel state: read acks (which move forward only and go to the reader's own
//! sockets) and the mention lookup of a channel's members.

use crate::domain::ids::{ChannelId, UserUid};
use std::collections::{HashMap, HashSet};

use super::{
    Actor, Admission, Audience, Community, Emitted, MAX_MENTION_RESULTS, Outcome, Subject, encode,
};
use crate::domain::error::{DomainError, What};
use crate::domain::model::{Channel, ChannelKind, Message, Millis, ReadAck, Role};
use crate::domain::records::Record;
use crate::domain::views::{
    BulkReadAcksOut, MentionCandidate, MentionResults, ReadAckItem, ReadAckOut,
};
use crate::domain::{limits, views};

/// The read ack of each (uid, channel).
#[derive(Debug, Default)]
pub struct ReadAcks {
    pub(super) by_reader: HashMap<(UserUid, ChannelId), ReadAck>,
}

impl Community {
    pub(super) fn member_of_channel(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> Result<(Channel, Role), DomainError> {
        let channel = self.directory.channel(channel_id)?.clone();
        let role = self.admit_inner(
            &channel.server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            records,
        )?;
        // A private channel does not exist for whoever may not see it.
        if !channel.access.viewable_by(Some(role)) {
            let refusal = DomainError::NotFound(What::Channel);
            return Err(self.refuse_after_join(
                &channel.server_id,
                &actor.user_uid,
                records,
                refusal,
            ));
        }
        Ok((channel, role))
    }

    pub(super) fn read_ack_item(&self, uid: &str, channel_id: &str) -> ReadAckItem {
        match self
            .read_acks
            .by_reader
            .get(&(uid.to_owned().into(), channel_id.to_owned().into()))
        {
            Some(a) => ReadAckItem {
                channel_id: channel_id.to_owned(),
                user_uid: uid.to_owned(),
                last_read_message_id: Some(a.message_id.clone().into()),
                acked_at: Some(views::rfc3339(a.acked_at)),
                cursor_index: a.seq,
            },
            None => ReadAckItem {
                channel_id: channel_id.to_owned(),
                user_uid: uid.to_owned(),
                last_read_message_id: None,
                acked_at: None,
                cursor_index: 0,
            },
        }
    }

    /// `GET /v1/channels/{id}/read-ack`.
    pub fn read_ack(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        now: Millis,
    ) -> Result<Outcome<ReadAckOut>, DomainError> {
        let mut records = Vec::new();
        self.member_of_channel(actor, channel_id, now, &mut records)?;
        Ok(Outcome::stored(
            ReadAckOut {
                channel_id: channel_id.to_owned(),
                read_ack: self.read_ack_item(&actor.user_uid, channel_id),
                applied: None,
            },
            records,
        ))
    }

    /// `PUT /v1/channels/{id}/read-ack`: moves forward only; emits `chat.read_ack.updated` to
    /// the same user's sockets.
    pub fn put_read_ack(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        message: &Message,
        now: Millis,
    ) -> Result<Outcome<ReadAckOut>, DomainError> {
        let mut records = Vec::new();
        let (channel, _) = self.member_of_channel(actor, channel_id, now, &mut records)?;
        if let Err(e) = self.check_cursor(&actor.user_uid, &channel, message) {
            return Err(self.refuse_after_join(&channel.server_id, &actor.user_uid, &records, e));
        }
        let mut events = Vec::new();
        let applied = self.advance_ack(
            &actor.user_uid,
            &channel,
            message,
            now,
            &mut records,
            &mut events,
        );
        let value = ReadAckOut {
            channel_id: channel_id.to_owned(),
            read_ack: self.read_ack_item(&actor.user_uid, channel_id),
            applied: Some(applied),
        };
        Ok(Outcome::published(value, records, events))
    }

    /// `PUT /v1/servers/{id}/read-acks` (wire contract A.10): up to
    /// [`limits::MAX_BULK_READ_ACKS`] text channels of the server, each once, all or nothing —
    /// every channel and cursor is checked before anything changes. Each `message` is the
    /// cursor to move to (`None`: the channel has nothing the reader may read, so nothing to
    /// move). Cursors move forward only, one `chat.read_ack.updated` per channel that moved;
    /// the answer covers exactly the requested channels, in the order asked.
    pub fn put_read_acks(
        &mut self,
        actor: &Actor,
        server_id: &str,
        acks: &[(ChannelId, Option<Message>)],
        now: Millis,
    ) -> Result<Outcome<BulkReadAcksOut>, DomainError> {
        let channels = self.bulk_ack_channels(server_id, acks.iter().map(|(c, _)| c))?;
        let mut records = Vec::new();
        self.admit_inner(
            server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            &mut records,
        )?;
        let checked = channels.iter().zip(acks).try_for_each(|(channel, (_, m))| {
            // A private channel does not exist for whoever may not see it.
            if !self.may_view(channel, Some(&actor.user_uid)) {
                return Err(DomainError::NotFound(What::Channel));
            }
            match m {
                Some(m) => self.check_cursor(&actor.user_uid, channel, m),
                None => Ok(()),
            }
        });
        if let Err(e) = checked {
            return Err(self.refuse_after_join(server_id, &actor.user_uid, &records, e));
        }
        let mut events = Vec::new();
        for (channel, (_, message)) in channels.iter().zip(acks) {
            if let Some(message) = message {
                self.advance_ack(
                    &actor.user_uid,
                    channel,
                    message,
                    now,
                    &mut records,
                    &mut events,
                );
            }
        }
        let read_acks = channels
            .iter()
            .map(|c| self.read_ack_item(&actor.user_uid, &c.id))
            .collect();
        Ok(Outcome::published(
            BulkReadAcksOut {
                server_id: server_id.to_owned().into(),
                read_acks,
            },
            records,
            events,
        ))
    }

    /// The channels of a bulk read-ack request, in order, if the request may name them: at
    /// most [`limits::MAX_BULK_READ_ACKS`], each once, each a text channel of `server_id`.
    /// The caller asks it before looking up any cursor, so a refused request reads nothing.
    pub fn bulk_ack_channels<'a>(
        &self,
        server_id: &str,
        channel_ids: impl ExactSizeIterator<Item = &'a ChannelId>,
    ) -> Result<Vec<Channel>, DomainError> {
        if channel_ids.len() > limits::MAX_BULK_READ_ACKS {
            return Err(DomainError::TooManyReadAcks);
        }
        self.directory.server(server_id)?;
        let mut seen = HashSet::with_capacity(channel_ids.len());
        let mut channels = Vec::with_capacity(channel_ids.len());
        for channel_id in channel_ids {
            if !seen.insert(channel_id) {
                return Err(DomainError::DuplicateChannel);
            }
            let channel = self.directory.channel(channel_id)?;
            if channel.server_id != server_id {
                return Err(DomainError::NotFound(What::Channel));
            }
            if channel.kind != ChannelKind::Text {
                return Err(DomainError::NotATextChannel);
            }
            channels.push(channel.clone());
        }
        Ok(channels)
    }

    /// Moves `uid`'s cursor in `channel` to `message` (checked readable by the caller) if
    /// that is forward; records it and emits `chat.read_ack.updated` to the user's sockets.
    /// Whether it moved.
    fn advance_ack(
        &mut self,
        uid: &UserUid,
        channel: &Channel,
        message: &Message,
        now: Millis,
        records: &mut Vec<Record>,
        events: &mut Vec<Emitted>,
    ) -> bool {
        let key = (uid.clone(), channel.id.clone());
        let forward = self
            .read_acks
            .by_reader
            .get(&key)
            .is_none_or(|a| a.seq < message.seq);
        if !forward {
            return false;
        }
        let ack = ReadAck {
            user_uid: uid.clone(),
            channel_id: channel.id.clone(),
            message_id: message.id.clone().into(),
            seq: message.seq,
            acked_at: now,
        };
        records.push(Record::ReadAck(ack.clone()));
        self.read_acks.by_reader.insert(key, ack);
        events.push(Emitted {
            server_id: channel.server_id.to_string(),
            event_id: None,
            audience: Audience::User(uid.to_string()),
            kind: "chat.read_ack.updated",
            // Flat: the read-ack item itself (wire contract A.7).
            payload: encode(&self.read_ack_item(uid, &channel.id)),
            created_at: now,
            subject: Subject::Server,
        });
        true
    }

    /// `GET /v1/channels/{id}/mentions:resolve`: members whose name or uid matches `query`
    /// (case-insensitive prefix of a word, or substring of the uid), then `@here`/`@channel`.
    pub fn resolve_mentions(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        query: &str,
        limit: usize,
        now: Millis,
    ) -> Result<Outcome<MentionResults>, DomainError> {
        limits::text_field("query", query)?;
        let mut records = Vec::new();
        let (channel, role) = self.member_of_channel(actor, channel_id, now, &mut records)?;
        let q = query.trim().trim_start_matches('@').to_lowercase();
        let limit = limit.clamp(1, MAX_MENTION_RESULTS);
        let mut users: Vec<MentionCandidate> = self
            .roster
            .memberships
            .values()
            .filter(|m| m.server_id == channel.server_id && m.is_current())
            // Only users this author may mention: a suggestion that would not be a mention
            // is none.
            .filter(|m| self.may_mention(&channel.server_id, &actor.user_uid, role, &m.user_uid))
            .filter(|m| channel.access.viewable_by(Some(m.role)))
            .filter_map(|m| {
                let name = self.display_name_in(&channel.server_id, &m.user_uid);
                let lname = name.to_lowercase();
                let hit = q.is_empty()
                    || lname.split_whitespace().any(|w| w.starts_with(&q))
                    || lname.starts_with(&q)
                    || m.user_uid.to_lowercase().contains(&q);
                hit.then(|| MentionCandidate {
                    kind: "user",
                    token: format!("@{}", m.user_uid),
                    target_id: m.user_uid.clone().into(),
                    display_text: name,
                })
            })
            .collect();
        users.sort_by(|a, b| (&a.display_text, &a.target_id).cmp(&(&b.display_text, &b.target_id)));
        let mut results: Vec<MentionCandidate> = users;
        for token in ["@here", "@channel"] {
            if q.is_empty() || token[1..].starts_with(&q) {
                results.push(MentionCandidate {
                    kind: "channel",
                    token: token.to_owned(),
                    target_id: channel.id.clone().into(),
                    display_text: token.to_owned(),
                });
            }
        }
        results.truncate(limit);
        Ok(Outcome::stored(MentionResults { results }, records))
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::Audience;
    use crate::domain::community::fixtures::*;
    use crate::domain::history::MemoryHistory;
    use crate::domain::model::HistoryVisibility;
    use crate::domain::views::rfc3339;

    #[test]
    fn read_acks_never_move_backwards_and_go_to_the_same_user_only() {
        let mut c = community(HistoryVisibility::Joined);
        let mut history = MemoryHistory::default();
        let alice = actor("uid_alice");
        let channel = text_channel(&mut c, "home", &alice);
        let m1 = post(&mut c, &mut history, &alice, &channel, "1", None);
        let m2 = post(&mut c, &mut history, &alice, &channel, "2", None);
        let first = c.put_read_ack(&alice, &channel, &m2, 50).unwrap();
        assert_eq!(first.value.applied, Some(true));
        assert_eq!(first.events[0].audience, Audience::User("uid_alice".into()));
        assert_eq!(first.events[0].event_id, None);
        let back = c.put_read_ack(&alice, &channel, &m1, 51).unwrap();
        assert_eq!(back.value.applied, Some(false));
        assert_eq!(
            back.value.read_ack.last_read_message_id.as_deref(),
            Some(m2.id.as_str())
        );
        assert!(back.records.is_empty() && back.events.is_empty());
        let got = c.read_ack(&alice, &channel, 52).unwrap().value;
        assert_eq!(got.read_ack.cursor_index, m2.seq);
        assert_eq!(got.read_ack.acked_at.as_deref(), Some(rfc3339(50).as_str()));
    }
}
