//! Moderation cases (wire contract Part D): any member reports another by reference and
//! reason; staff act on a case at once (`kick`, `timeout_short`, `channel_lock`) or propose an
//! action the staff vote on (`ban`, `timeout_long`, `role_remove`). Who sees a case: its
//! reporter, the staff, and its target once an action was taken on it (without who reported
//! it or why). Every step is an audit row; every change a staff member should see is a
//! `chat.moderation.case_updated` to each of them.
//!
//! The votes on actions that need one are `votes.rs`; both end in [`Community::enforce`].

use std::collections::HashMap;

use serde::Serialize;

use super::{Actor, Audience, Community, Emitted, Outcome, Subject};
use crate::domain::error::{DomainError, Limit, What};
use crate::domain::ids::ServerId;
use crate::domain::limits::{
    CASES_PAGE, MAX_CHANNEL_LOCK_SECS, MAX_OPEN_REPORTS_PER_USER, MAX_REASON_TEXT_CHARS,
    MAX_REPORTS_PER_HOUR, MAX_TIMEOUT_SHORT_SECS,
};
use crate::domain::model::{
    ActionType, Case, CaseStatus, Millis, ModAction, ModerationKind, Proposal, ProposalStatus,
    Role, Vote, VotePolicy,
};
use crate::domain::records::Record;
use crate::domain::views::{ActionItem, CaseDetail, CaseItem, CasePage, rfc3339};

const HOUR_MS: Millis = 3_600_000;
/// How long a closed case keeps its evidence (Part D: deleted 30 days after closure).
pub const EVIDENCE_KEPT_MS: Millis = 30 * 24 * HOUR_MS;

/// Cases, their actions, the servers' policies, proposals and votes.
#[derive(Debug, Default)]
pub struct CaseBook {
    pub(super) cases: HashMap<String, Case>,
    pub(super) actions: HashMap<String, Vec<ModAction>>,
    pub(super) policies: HashMap<ServerId, VotePolicy>,
    pub(super) proposals: HashMap<String, Proposal>,
    pub(super) votes: HashMap<String, Vec<Vote>>,
    /// Sealed evidence by case id (the domain never sees it in the clear).
    pub(super) evidence: HashMap<String, String>,
}

impl CaseBook {
    pub(super) fn insert_action(&mut self, a: ModAction) {
        self.actions.entry(a.case_id.clone()).or_default().push(a);
    }

    pub(super) fn insert_vote(&mut self, v: Vote) {
        let votes = self.votes.entry(v.proposal_id.clone()).or_default();
        if !votes.iter().any(|x| x.voter_uid == v.voter_uid) {
            votes.push(v);
        }
    }

    pub(super) fn proposals_of<'a>(
        &'a self,
        case_id: &'a str,
    ) -> impl Iterator<Item = &'a Proposal> + 'a {
        self.proposals
            .values()
            .filter(move |p| p.case_id == case_id)
    }
}

/// `POST …/moderation/cases`: what a report says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub target_uid: String,
    pub channel_id: Option<String>,
    pub message_id: Option<String>,
    pub reason_code: String,
    pub reason_text: Option<String>,
    /// Evidence the reporter chose to disclose, sealed by the caller.
    pub evidence: Option<String>,
}

/// An action asked for on a case (immediate or proposed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionAsk {
    pub action_type: ActionType,
    pub duration_seconds: Option<i64>,
    pub channel_id: Option<String>,
    /// For a proposal: the proposer's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

#[derive(Serialize)]
struct CaseUpdated<'a> {
    server_id: &'a str,
    case_id: &'a str,
    status: &'static str,
}

/// The audit payload of a report (the reporter's text stays in the case alone).
#[derive(Serialize)]
struct Opened<'a> {
    target_uid: &'a str,
    reason_code: &'a str,
}

#[derive(Serialize)]
struct Locked<'a> {
    channel_id: &'a str,
    until: String,
}

fn reason_ok(code: &str, text: Option<&str>) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && text.is_none_or(|t| t.chars().count() <= MAX_REASON_TEXT_CHARS)
}

fn action_item(a: &ModAction) -> ActionItem {
    ActionItem {
        action_id: a.id.clone(),
        case_id: a.case_id.clone(),
        action_type: a.action_type.as_str(),
        target_uid: a.target_uid.to_string(),
        channel_id: a.channel_id.clone(),
        duration_seconds: a.duration_seconds,
        expires_at: a.expires_at.map(rfc3339),
        enforced_by_uid: a.enforced_by_uid.to_string(),
        enforced_at: rfc3339(a.enforced_at),
    }
}

impl Community {
    /// Whether `uid` may see `case`, and whether as its target only.
    fn case_view(&self, case: &Case, uid: &str) -> Option<bool> {
        let staff = self
            .current_role(&case.server_id, uid)
            .is_some_and(|r| r.at_least(Role::Moderator));
        if staff || case.reporter_uid == uid {
            return Some(false);
        }
        let acted = self
            .cases
            .actions
            .get(&case.id)
            .is_some_and(|a| !a.is_empty());
        (case.target_uid == uid && acted).then_some(true)
    }

    fn case_item(&self, case: &Case, as_target: bool, now: Millis) -> CaseItem {
        CaseItem {
            case_id: case.id.clone(),
            server_id: case.server_id.to_string(),
            // The target is not told who reported it, nor what they wrote.
            reporter_uid: (!as_target).then(|| case.reporter_uid.to_string()),
            target_uid: case.target_uid.to_string(),
            channel_id: case.channel_id.clone(),
            message_id: case.message_id.clone(),
            reason_code: case.reason_code.clone(),
            reason_text: if as_target {
                None
            } else {
                case.reason_text.clone()
            },
            status: self.case_status(case, now).as_str(),
            created_at: rfc3339(case.created_at),
            closed_at: case.closed_at.map(rfc3339),
        }
    }

    /// A case's status at `now`: a voting case whose proposal ran out is open again.
    fn case_status(&self, case: &Case, now: Millis) -> CaseStatus {
        if case.status == CaseStatus::Voting
            && !self
                .cases
                .proposals_of(&case.id)
                .any(|p| self.proposal_status(p, now) == ProposalStatus::Open)
        {
            return CaseStatus::Open;
        }
        case.status
    }

    /// `chat.moderation.case_updated` to each staff member of the server.
    pub(super) fn tell_staff(&self, case: &Case, status: CaseStatus, now: Millis) -> Vec<Emitted> {
        let payload = super::encode(&CaseUpdated {
            server_id: &case.server_id,
            case_id: &case.id,
            status: status.as_str(),
        });
        let staff = self.members_with(&case.server_id, &Role::at_least_all(Role::Moderator));
        staff
            .into_iter()
            .map(|uid| Emitted {
                server_id: case.server_id.to_string(),
                event_id: None,
                audience: Audience::User(uid),
                kind: "chat.moderation.case_updated",
                payload: payload.clone(),
                created_at: now,
                subject: Subject::Server,
            })
            .collect()
    }

    /// `POST /v1/servers/{id}/moderation/cases` (a member): a report about another member
    /// (current or past) of the server.
    pub fn report(
        &mut self,
        actor: &Actor,
        server_id: &str,
        report: Report,
        now: Millis,
    ) -> Result<Outcome<CaseItem>, DomainError> {
        self.directory.server(server_id)?;
        self.current_role(server_id, &actor.user_uid)
            .ok_or(DomainError::NotAMember)?;
        crate::domain::limits::text_field("reason_code", &report.reason_code)?;
        crate::domain::limits::optional_text_field("reason_text", report.reason_text.as_deref())?;
        if !reason_ok(&report.reason_code, report.reason_text.as_deref()) {
            return Err(DomainError::InvalidReason);
        }
        if report.target_uid == actor.user_uid.as_str() {
            return Err(DomainError::InvalidTarget);
        }
        if self
            .roster
            .membership(server_id, &report.target_uid)
            .is_none()
        {
            return Err(DomainError::NotFound(What::Member));
        }
        if let Some(channel_id) = &report.channel_id
            && self.directory.channel(channel_id)?.server_id != server_id
        {
            return Err(DomainError::NotFound(What::Channel));
        }
        let mine: Vec<&Case> = self
            .cases
            .cases
            .values()
            .filter(|c| c.server_id == server_id && c.reporter_uid == actor.user_uid)
            .collect();
        let open = mine
            .iter()
            .filter(|c| matches!(c.status, CaseStatus::Open | CaseStatus::Voting))
            .count();
        if open >= MAX_OPEN_REPORTS_PER_USER {
            return Err(DomainError::LimitReached(Limit::OpenReportsPerUser));
        }
        let mut recent: Vec<Millis> = mine
            .iter()
            .map(|c| c.created_at)
            .filter(|t| *t > now - HOUR_MS)
            .collect();
        if recent.len() >= MAX_REPORTS_PER_HOUR {
            recent.sort_unstable();
            return Err(DomainError::ReportsThrottled {
                retry_after_ms: (recent[recent.len() - MAX_REPORTS_PER_HOUR] + HOUR_MS - now)
                    .max(1),
            });
        }
        self.limiter.check(&actor.user_uid, now)?;
        let case = Case {
            id: self.entropy.id("case"),
            server_id: server_id.to_owned().into(),
            reporter_uid: actor.user_uid.clone(),
            target_uid: report.target_uid.clone().into(),
            channel_id: report.channel_id,
            message_id: report.message_id,
            reason_code: report.reason_code,
            reason_text: report.reason_text.filter(|t| !t.is_empty()),
            status: CaseStatus::Open,
            created_at: now,
            closed_at: None,
        };
        let mut records = vec![Record::Case(case.clone())];
        if let Some(sealed) = report.evidence {
            records.push(Record::Evidence {
                case_id: case.id.clone(),
                server_id: server_id.to_owned(),
                sealed: sealed.clone(),
                created_at: now,
            });
            self.cases.evidence.insert(case.id.clone(), sealed);
        }
        self.audit(
            &mut records,
            server_id,
            Some(&case.id),
            &actor.user_uid,
            "case_opened",
            &Opened {
                target_uid: &case.target_uid,
                reason_code: &case.reason_code,
            },
            now,
        );
        let events = self.tell_staff(&case, CaseStatus::Open, now);
        let value = self.case_item(&case, false, now);
        self.cases.cases.insert(case.id.clone(), case);
        Ok(Outcome::published(value, records, events))
    }

    /// `GET …/moderation/cases?cursor=`: the cases the caller may see, newest first.
    pub fn list_cases(
        &self,
        actor: &Actor,
        server_id: &str,
        after: Option<&str>,
        now: Millis,
    ) -> Result<CasePage, DomainError> {
        self.directory.server(server_id)?;
        let mut visible: Vec<(&Case, bool)> = self
            .cases
            .cases
            .values()
            .filter(|c| c.server_id == server_id)
            .filter_map(|c| self.case_view(c, &actor.user_uid).map(|t| (c, t)))
            .collect();
        visible.sort_by(|(a, _), (b, _)| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        let start = match after {
            None => 0,
            Some(after) => visible
                .iter()
                .position(|(c, _)| c.id == after)
                .map(|p| p + 1)
                .ok_or(DomainError::NotFound(What::Case))?,
        };
        let page: Vec<CaseItem> = visible
            .iter()
            .skip(start)
            .take(CASES_PAGE)
            .map(|(c, t)| self.case_item(c, *t, now))
            .collect();
        let next_cursor = (start + page.len() < visible.len())
            .then(|| page.last().map(|c| c.case_id.clone()))
            .flatten();
        Ok(CasePage {
            cases: page,
            next_cursor,
        })
    }

    /// `GET …/moderation/cases/{case_id}`: the case with its actions and proposals; a case
    /// the caller may not see is not found.
    pub fn get_case(
        &self,
        actor: &Actor,
        server_id: &str,
        case_id: &str,
        now: Millis,
    ) -> Result<CaseDetail, DomainError> {
        self.directory.server(server_id)?;
        let case = self.case_of(server_id, case_id)?;
        let as_target = self
            .case_view(case, &actor.user_uid)
            .ok_or(DomainError::NotFound(What::Case))?;
        let mut proposals: Vec<&Proposal> = self.cases.proposals_of(case_id).collect();
        proposals.sort_by_key(|p| p.created_at);
        Ok(CaseDetail {
            case: self.case_item(case, as_target, now),
            actions: self
                .cases
                .actions
                .get(case_id)
                .into_iter()
                .flatten()
                .map(action_item)
                .collect(),
            proposals: if as_target {
                Vec::new()
            } else {
                proposals
                    .iter()
                    .map(|p| self.proposal_item(p, now))
                    .collect()
            },
            evidence: None,
        })
    }

    /// The case `case_id` of `server_id` (another server's is not found).
    pub(super) fn case_of(&self, server_id: &str, case_id: &str) -> Result<&Case, DomainError> {
        self.cases
            .cases
            .get(case_id)
            .filter(|c| c.server_id == server_id)
            .ok_or(DomainError::NotFound(What::Case))
    }

    /// The sealed evidence of a case, for its reporter and the staff only (never its target).
    pub fn case_evidence(&self, actor: &Actor, server_id: &str, case_id: &str) -> Option<&str> {
        let case = self.case_of(server_id, case_id).ok()?;
        match self.case_view(case, &actor.user_uid) {
            Some(false) => self.cases.evidence.get(case_id).map(String::as_str),
            _ => None,
        }
    }

    /// Deletes the evidence of cases closed more than [`EVIDENCE_KEPT_MS`] ago (run now and
    /// then by the authority); the records to commit.
    pub fn purge_evidence(&mut self, now: Millis) -> Vec<Record> {
        let cases = &self.cases.cases;
        let old: Vec<String> = self
            .cases
            .evidence
            .keys()
            .filter(|id| {
                cases
                    .get(id.as_str())
                    .and_then(|c| c.closed_at)
                    .is_some_and(|at| at + EVIDENCE_KEPT_MS <= now)
            })
            .cloned()
            .collect();
        old.into_iter()
            .map(|case_id| {
                self.cases.evidence.remove(&case_id);
                Record::EvidenceDeleted { case_id }
            })
            .collect()
    }

    /// A case of `server_id` that is still open to action.
    pub(super) fn actionable_case(
        &self,
        server_id: &str,
        case_id: &str,
        now: Millis,
    ) -> Result<Case, DomainError> {
        let case = self.case_of(server_id, case_id)?.clone();
        match self.case_status(&case, now) {
            CaseStatus::Open | CaseStatus::Voting => Ok(case),
            _ => Err(DomainError::CaseClosed),
        }
    }

    /// `POST …/cases/{case_id}/actions/immediate` (a moderator or above, over the target's
    /// rank): `kick`, `timeout_short` (≤ 1 h) or `channel_lock` (≤ 24 h, a channel of the
    /// server), enforced at once.
    pub fn act_now(
        &mut self,
        actor: &Actor,
        server_id: &str,
        case_id: &str,
        ask: ActionAsk,
        now: Millis,
    ) -> Result<Outcome<ActionItem>, DomainError> {
        self.directory.server(server_id)?;
        if !ask.action_type.is_immediate() {
            return Err(DomainError::InvalidAction(
                "immediate actions are kick, timeout_short and channel_lock; the others are voted on",
            ));
        }
        // Who is not staff learns nothing of the case's state.
        self.require_staff(server_id, actor)?;
        let case = self.actionable_case(server_id, case_id, now)?;
        let (duration, channel_id) = match ask.action_type {
            ActionType::Kick => (None, None),
            ActionType::TimeoutShort => (
                Some(bounded(ask.duration_seconds, 600, MAX_TIMEOUT_SHORT_SECS)?),
                None,
            ),
            _ => {
                let channel_id = ask.channel_id.clone().or(case.channel_id.clone()).ok_or(
                    DomainError::InvalidAction("channel_lock needs a channel_id"),
                )?;
                if self.directory.channel(&channel_id)?.server_id != server_id {
                    return Err(DomainError::NotFound(What::Channel));
                }
                (
                    Some(bounded(ask.duration_seconds, 3600, MAX_CHANNEL_LOCK_SECS)?),
                    Some(channel_id),
                )
            }
        };
        if ask.action_type == ActionType::ChannelLock {
            self.require_staff(server_id, actor)?;
            self.limiter.check(&actor.user_uid, now)?;
        } else {
            self.moderator_over(actor, server_id, &case.target_uid, now)?;
        }
        self.enforce(actor, case, ask.action_type, duration, channel_id, now)
    }

    /// Takes `action` on `case` for `actor` (checked by the caller): the measure, the action
    /// row, the case enforced, the audit row, and what the others are told.
    pub(super) fn enforce(
        &mut self,
        actor: &Actor,
        mut case: Case,
        action: ActionType,
        duration: Option<i64>,
        channel_id: Option<String>,
        now: Millis,
    ) -> Result<Outcome<ActionItem>, DomainError> {
        let server_id = case.server_id.to_string();
        let target = case.target_uid.to_string();
        let until = duration.map(|d| now + d * 1000);
        let mut out: Outcome<()> = Outcome::pure(());
        match action {
            ActionType::Kick => out = self.expel(&server_id, &target, "kicked", now)?,
            ActionType::Ban => {
                let record = self.set_measure(
                    actor,
                    &server_id,
                    ModerationKind::Ban,
                    &target,
                    until,
                    true,
                    now,
                );
                out = self.expel(&server_id, &target, "banned", now)?;
                out.records.insert(0, record);
            }
            ActionType::TimeoutShort | ActionType::TimeoutLong => {
                let record = self.set_measure(
                    actor,
                    &server_id,
                    ModerationKind::Timeout,
                    &target,
                    until,
                    true,
                    now,
                );
                out.records.push(record);
                out.notices.push(super::Notice::VoiceMute {
                    server_id: server_id.clone(),
                    user_uid: target.clone(),
                });
            }
            ActionType::ChannelLock => {
                let channel = channel_id.clone().expect("checked by act_now");
                let record = self.set_measure(
                    actor,
                    &server_id,
                    ModerationKind::Lock,
                    &channel,
                    until,
                    true,
                    now,
                );
                out.records.push(record);
                let locked = Locked {
                    channel_id: &channel,
                    until: rfc3339(until.unwrap_or(now)),
                };
                let event = self.server_event(
                    &mut out.records,
                    &server_id,
                    "chat.channel.locked",
                    &locked,
                    now,
                );
                out.events.push(event);
            }
            ActionType::RoleRemove => {
                let demoted = self.demote(&server_id, &target, now);
                out.records.extend(demoted.records);
                out.events.extend(demoted.events);
            }
        }
        let item = ModAction {
            id: self.entropy.id("act"),
            case_id: case.id.clone(),
            server_id: server_id.clone().into(),
            action_type: action,
            target_uid: target.clone().into(),
            channel_id,
            duration_seconds: duration,
            expires_at: until,
            enforced_by_uid: actor.user_uid.clone(),
            enforced_at: now,
        };
        case.status = CaseStatus::Enforced;
        case.closed_at = Some(now);
        let mut records = out.records;
        records.push(Record::ModAction(item.clone()));
        records.push(Record::Case(case.clone()));
        let value = action_item(&item);
        self.audit(
            &mut records,
            &server_id,
            Some(&case.id),
            &actor.user_uid,
            "action_enforced",
            &value,
            now,
        );
        let mut events = out.events;
        events.extend(self.tell_staff(&case, CaseStatus::Enforced, now));
        self.cases.insert_action(item);
        self.cases.cases.insert(case.id.clone(), case);
        Ok(Outcome {
            value,
            records,
            events,
            notices: out.notices,
        })
    }

    /// `role_remove`: the target becomes a member again (audited and announced by the caller's
    /// records).
    fn demote(&mut self, server_id: &str, target: &str, now: Millis) -> Outcome<()> {
        let Some(m) = self
            .roster
            .membership(server_id, target)
            .filter(|m| m.is_current() && m.role != Role::Member && m.role != Role::Owner)
            .cloned()
        else {
            return Outcome::pure(());
        };
        let m = crate::domain::model::Membership {
            role: Role::Member,
            ..m
        };
        let mut records = vec![Record::Membership(m.clone())];
        self.roster.index(m);
        let event = self.role_updated_event(&mut records, server_id, target, Role::Member, now);
        Outcome {
            records,
            events: vec![event],
            ..Outcome::pure(())
        }
    }
}

/// `asked` seconds (or `default`), within 1 ..= `max`.
pub(super) fn bounded(asked: Option<i64>, default: i64, max: i64) -> Result<i64, DomainError> {
    bounded_from(Some(asked.unwrap_or(default)), 1, max)
}

/// `asked` seconds, required, within `min` ..= `max`.
pub(super) fn bounded_from(asked: Option<i64>, min: i64, max: i64) -> Result<i64, DomainError> {
    match asked {
        Some(d) if (min..=max).contains(&d) => Ok(d),
        _ => Err(DomainError::InvalidAction(
            "duration_seconds is out of range for this action (timeout_short ≤ 3600, channel_lock ≤ 86400, timeout_long 3601 … 2592000, ban ≤ 31536000)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{ActionAsk, EVIDENCE_KEPT_MS, Report};
    use crate::domain::community::Admission;
    use crate::domain::community::fixtures::*;
    use crate::domain::model::{ActionType, HistoryVisibility};
    use crate::domain::records::Record;

    #[test]
    fn evidence_is_kept_thirty_days_after_its_case_closes_and_only_the_reporter_and_staff_get_it() {
        let mut c = community(HistoryVisibility::Joined);
        let owner = actor("uid_owner");
        let (reporter, target) = (actor("uid_reporter"), actor("uid_target"));
        for a in [&owner, &reporter, &target] {
            c.admit(a, "home", Admission::Connect, 1).unwrap();
        }
        let report = Report {
            target_uid: "uid_target".into(),
            reason_code: "threat".into(),
            evidence: Some("sealed-bytes".into()),
            ..Default::default()
        };
        let case = c.report(&reporter, "home", report, 10).unwrap().value;
        assert!(
            c.purge_evidence(10 + EVIDENCE_KEPT_MS * 2).is_empty(),
            "an open case keeps it"
        );
        assert_eq!(
            c.case_evidence(&reporter, "home", &case.case_id),
            Some("sealed-bytes")
        );
        assert_eq!(
            c.case_evidence(&owner, "home", &case.case_id),
            Some("sealed-bytes")
        );
        let ask = ActionAsk {
            action_type: ActionType::TimeoutShort,
            duration_seconds: Some(60),
            channel_id: None,
            idempotency_key: None,
        };
        c.act_now(&owner, "home", &case.case_id, ask, 100).unwrap();
        assert_eq!(
            c.case_evidence(&target, "home", &case.case_id),
            None,
            "never the target"
        );
        assert!(c.purge_evidence(100 + EVIDENCE_KEPT_MS - 1).is_empty());
        let purged = c.purge_evidence(100 + EVIDENCE_KEPT_MS);
        assert!(
            matches!(&purged[..], [Record::EvidenceDeleted { case_id }] if *case_id == case.case_id)
        );
        assert_eq!(c.case_evidence(&owner, "home", &case.case_id), None);
        assert!(c.purge_evidence(200 + EVIDENCE_KEPT_MS).is_empty(), "once");
    }
}
