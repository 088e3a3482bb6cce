//! Channel history held in memory: the executable definition of what a history page is.
//!
//! [`MemoryHistory::query`] answers a [`MessageQuery`] the way storage must (the storage tests
//! compare both engines' `Storage::messages` against it on random histories):
//!
//! - a message is *visible* when it is in the query's channel, its seq is allowed by the
//!   [`Visibility`](super::records::Visibility) (`lo < seq <= hi` for some span), and it is not deleted unless
//!   `include_deleted`;
//! - the page is taken from the visible messages with `seq < before` and `seq > after` (each
//!   bound only when given): with `after`, the oldest `limit` of them; otherwise the newest
//!   `limit`. Either way the page is returned oldest first;
//! - `has_older` says whether a visible message exists below the page: before its first message,
//!   or — for an empty page — within the bounds that remain below it (`seq <= after` when
//!   `after` is given, and `seq < before` when `before` is given). So an empty latest page has
//!   nothing older, and an empty newer page has older messages if anything visible is at or
//!   before `after`;
//! - `reply_targets` are the stored messages whose ids the page's messages reply to — any
//!   channel, any visibility, deleted or not — each once, by seq.
//!
//! Like storage, inserts are insert-if-absent: a message whose id or seq is already held is
//! ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use super::model::{Message, Millis, Seq};
use super::records::{MessagePage, MessageQuery};

#[derive(Debug, Clone, Default)]
pub struct MemoryHistory {
    by_seq: BTreeMap<Seq, Message>,
    seq_of_id: HashMap<String, Seq>,
    by_channel: HashMap<String, BTreeSet<Seq>>,
}

impl MemoryHistory {
    pub fn new() -> MemoryHistory {
        MemoryHistory::default()
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Stores `message` unless one with the same id or seq is already held. Returns whether it
    /// was stored.
    pub fn insert(&mut self, message: Message) -> bool {
        if self.seq_of_id.contains_key(&message.id) || self.by_seq.contains_key(&message.seq) {
            return false;
        }
        self.seq_of_id.insert(message.id.clone(), message.seq);
        self.by_channel
            .entry(message.channel_id.clone())
            .or_default()
            .insert(message.seq);
        self.by_seq.insert(message.seq, message);
        true
    }

    /// Sets `deleted_at` of the message with this id (the message is kept). Returns whether
    /// such a message exists.
    pub fn mark_deleted(&mut self, id: &str, at: Millis) -> bool {
        let Some(seq) = self.seq_of_id.get(id) else {
            return false;
        };
        let message = self.by_seq.get_mut(seq).expect("index and messages agree");
        message.deleted_at = Some(at);
        true
    }

    pub fn get(&self, id: &str) -> Option<&Message> {
        self.seq_of_id.get(id).map(|seq| &self.by_seq[seq])
    }

    /// One page of history; see the module documentation for the exact rules.
    pub fn query(&self, query: &MessageQuery) -> MessagePage {
        let no_seqs = BTreeSet::new();
        let channel = self.by_channel.get(&query.channel_id).unwrap_or(&no_seqs);
        let visible = |seq: &&Seq| {
            query.visibility.allows_message(&self.by_seq[*seq])
                && (query.include_deleted || self.by_seq[*seq].deleted_at.is_none())
        };
        // The visible messages below `upper` (exclusive) and above `lower` (exclusive).
        let window = |lower: Option<Seq>, upper: Option<Seq>| {
            let start = lower.map_or(Bound::Unbounded, Bound::Excluded);
            let end = upper.map_or(Bound::Unbounded, Bound::Excluded);
            let empty =
                matches!((lower, upper), (Some(lo), Some(hi)) if lo.saturating_add(1) >= hi);
            (!empty)
                .then(|| channel.range((start, end)))
                .into_iter()
                .flatten()
                .filter(visible)
        };

        let mut seqs: Vec<Seq> = if query.after.is_some() {
            window(query.after, query.before)
                .take(query.limit)
                .copied()
                .collect()
        } else {
            let mut newest: Vec<Seq> = window(None, query.before)
                .rev()
                .take(query.limit)
                .copied()
                .collect();
            newest.reverse();
            newest
        };

        let has_older = match seqs.first() {
            Some(&first) => window(None, Some(first)).next().is_some(),
            None => {
                // Below an empty page: `seq <= after` (if given) and `seq < before` (if given).
                let upper = match (query.after.map(|a| a.saturating_add(1)), query.before) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                window(None, upper).next().is_some()
            }
        };

        let mut reply_targets: Vec<Message> = seqs
            .iter()
            .filter_map(|seq| self.by_seq[seq].reply_to_id.as_deref())
            .filter_map(|id| self.get(id))
            .cloned()
            .collect();
        reply_targets.sort_unstable_by_key(|m| m.seq);
        reply_targets.dedup_by_key(|m| m.seq);

        let messages = seqs
            .drain(..)
            .map(|seq| self.by_seq[&seq].clone())
            .collect();
        MessagePage {
            messages,
            has_older,
            reply_targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::Content;
    use crate::domain::records::Visibility;

    fn message(seq: Seq, channel: &str, reply_to: Option<&str>) -> Message {
        Message {
            seq,
            id: format!("m{seq}"),
            server_id: "srv".to_owned(),
            channel_id: channel.to_owned(),
            author_uid: "u".to_owned(),
            author_device_id: "d".to_owned(),
            content: Content::Plain {
                body: format!("message {seq}"),
            },
            reply_to_id: reply_to.map(str::to_owned),
            mentions: vec![],
            attachments: vec![],
            created_at: seq * 1000,
            deleted_at: None,
        }
    }

    /// Seqs 1..=n in channel `a`, plus every seq 100+i in channel `b`.
    fn history(n: Seq) -> MemoryHistory {
        let mut history = MemoryHistory::new();
        for seq in 1..=n {
            history.insert(message(seq, "a", None));
            history.insert(message(100 + seq, "b", None));
        }
        history
    }

    fn query(visibility: Visibility) -> MessageQuery {
        MessageQuery {
            channel_id: "a".to_owned(),
            visibility,
            before: None,
            after: None,
            limit: 3,
            include_deleted: false,
        }
    }

    fn seqs(page: &MessagePage) -> Vec<Seq> {
        page.messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn latest_page_is_the_newest_messages_oldest_first() {
        let page = history(10).query(&query(Visibility::All));
        assert_eq!(seqs(&page), vec![8, 9, 10]);
        assert!(page.has_older);
        assert!(page.reply_targets.is_empty());
    }

    #[test]
    fn before_pages_walk_back_to_the_start_of_history() {
        let history = history(7);
        let mut q = query(Visibility::All);
        let mut pages = Vec::new();
        loop {
            let page = history.query(&q);
            pages.push(seqs(&page));
            if !page.has_older {
                break;
            }
            q.before = Some(page.messages[0].seq);
        }
        assert_eq!(pages, vec![vec![5, 6, 7], vec![2, 3, 4], vec![1]]);
        // Past the start: an empty page with nothing older.
        q.before = Some(1);
        let page = history.query(&q);
        assert_eq!(seqs(&page), Vec::<Seq>::new());
        assert!(!page.has_older);
    }

    #[test]
    fn after_pages_walk_forward_and_know_what_is_older() {
        let history = history(7);
        let mut q = query(Visibility::All);
        q.after = Some(0);
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![1, 2, 3]);
        assert!(!page.has_older);
        q.after = Some(3);
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![4, 5, 6]);
        assert!(page.has_older);
        q.after = Some(7);
        let page = history.query(&q);
        assert!(page.messages.is_empty());
        assert!(page.has_older, "seqs 1..=7 are at or before `after`");
        // Both bounds: the oldest of the window, still oldest first.
        q.after = Some(2);
        q.before = Some(5);
        assert_eq!(seqs(&history.query(&q)), vec![3, 4]);
        // A window that cannot hold anything.
        q.after = Some(5);
        q.before = Some(6);
        let page = history.query(&q);
        assert!(page.messages.is_empty());
        assert!(page.has_older);
    }

    #[test]
    fn spans_with_gaps_hide_what_was_posted_between_them() {
        let history = history(12);
        // Member for 2 < seq <= 4 and 8 < seq (still a member).
        let mut q = query(Visibility::Spans(vec![(2, Some(4)), (8, None)]));
        q.limit = 10;
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![3, 4, 9, 10, 11, 12]);
        assert!(!page.has_older);
        q.limit = 5;
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![4, 9, 10, 11, 12]);
        assert!(page.has_older);
        q.before = Some(9);
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![3, 4]);
        assert!(!page.has_older);
        q.before = None;
        q.after = Some(4);
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![9, 10, 11, 12]);
        assert!(page.has_older);
        // No spans: nothing at all.
        let page = history.query(&query(Visibility::Spans(vec![])));
        assert_eq!(page, MessagePage::default());
    }

    #[test]
    fn deleted_messages_are_left_out_unless_asked_for() {
        let mut history = history(5);
        assert!(history.mark_deleted("m5", 77));
        assert!(history.mark_deleted("m1", 78));
        assert!(!history.mark_deleted("nope", 79));
        assert_eq!(history.get("m5").unwrap().deleted_at, Some(77));
        let mut q = query(Visibility::All);
        q.limit = 10;
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![2, 3, 4]);
        assert!(!page.has_older);
        q.limit = 3;
        q.before = Some(3);
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![2]);
        assert!(!page.has_older, "the only older one is deleted");
        q.include_deleted = true;
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![1, 2]);
        assert!(!page.has_older);
        assert_eq!(page.messages[0].deleted_at, Some(78));
    }

    #[test]
    fn reply_targets_come_from_anywhere_once_each() {
        let mut history = MemoryHistory::new();
        history.insert(message(1, "b", None)); // another channel
        history.insert(message(2, "a", None)); // deleted below
        history.insert(message(3, "a", None)); // outside the span
        history.insert(message(4, "a", Some("m1")));
        history.insert(message(5, "a", Some("m2")));
        history.insert(message(6, "a", Some("m3")));
        history.insert(message(7, "a", Some("m1")));
        history.insert(message(8, "a", Some("gone"))); // never stored
        history.insert(message(9, "a", Some("m8"))); // on the page itself
        history.mark_deleted("m2", 1);
        let mut q = query(Visibility::Spans(vec![(3, None)]));
        q.limit = 10;
        let page = history.query(&q);
        assert_eq!(seqs(&page), vec![4, 5, 6, 7, 8, 9]);
        let targets: Vec<Seq> = page.reply_targets.iter().map(|m| m.seq).collect();
        assert_eq!(targets, vec![1, 2, 3, 8]);
        assert_eq!(page.reply_targets[1].deleted_at, Some(1));
    }

    #[test]
    fn duplicate_ids_and_seqs_are_ignored() {
        let mut history = MemoryHistory::new();
        assert!(history.insert(message(1, "a", None)));
        let mut same_id = message(2, "a", None);
        same_id.id = "m1".to_owned();
        assert!(!history.insert(same_id));
        assert!(!history.insert(message(1, "b", None)));
        assert_eq!(history.len(), 1);
        assert_eq!(history.get("m1").unwrap().channel_id, "a");
    }

    #[test]
    fn zero_limit_returns_nothing_but_still_answers_has_older() {
        let history = history(3);
        let mut q = query(Visibility::All);
        q.limit = 0;
        let page = history.query(&q);
        assert!(page.messages.is_empty());
        assert!(page.has_older);
        q.before = Some(1);
        assert!(!history.query(&q).has_older);
    }
}
