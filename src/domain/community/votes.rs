//! Votes on moderation (wire contract Part D): each server's policy (threshold of yes votes,
//! quorum of distinct voters, window), proposals that keep the policy of the moment they were
//! made, and the votes of the staff who outrank the target. With fewer eligible voters than
//! the quorum no proposal is made; one vote per voter; the vote that meets the policy
//! enforces, in the same request, once; a proposal that can no longer pass is rejected, one
//! past its window expired.

use serde::Serialize;

use super::cases::{ActionAsk, bounded, bounded_from};
use super::{Actor, Community, Outcome};
use crate::domain::error::{DomainError, Needs, What};
use crate::domain::limits::{
    MAX_BAN_SECS, MAX_POLICY_QUORUM, MAX_TIMEOUT_LONG_SECS, MAX_TIMEOUT_SHORT_SECS,
};
use crate::domain::model::{
    ActionType, CaseStatus, Millis, Proposal, ProposalStatus, Role, Vote, VotePolicy, VoteValue,
};
use crate::domain::records::Record;
use crate::domain::views::{PolicyItem, ProposalItem, VoteTally, rfc3339};

impl Community {
    /// The voting policy of `server_id` (the default until its owner sets one).
    pub fn vote_policy(&self, server_id: &str) -> VotePolicy {
        self.cases
            .policies
            .get(server_id)
            .copied()
            .unwrap_or(VotePolicy::DEFAULT)
    }

    fn policy_item(&self, server_id: &str) -> PolicyItem {
        let p = self.vote_policy(server_id);
        PolicyItem {
            server_id: server_id.to_owned(),
            threshold: p.threshold,
            quorum: p.quorum,
            window_seconds: p.window_seconds,
        }
    }

    /// `GET …/moderation/policy` (a member).
    pub fn get_vote_policy(
        &self,
        actor: &Actor,
        server_id: &str,
    ) -> Result<PolicyItem, DomainError> {
        self.directory.server(server_id)?;
        self.current_role(server_id, &actor.user_uid)
            .ok_or(DomainError::NotAMember)?;
        Ok(self.policy_item(server_id))
    }

    /// `PUT …/moderation/policy` (the owner): applies to proposals made from now on.
    pub fn put_vote_policy(
        &mut self,
        actor: &Actor,
        server_id: &str,
        policy: VotePolicy,
        now: Millis,
    ) -> Result<Outcome<PolicyItem>, DomainError> {
        self.directory.server(server_id)?;
        match self.current_role(server_id, &actor.user_uid) {
            Some(Role::Owner) => {}
            Some(_) => return Err(DomainError::Forbidden(Needs::Owner)),
            None => return Err(DomainError::NotAMember),
        }
        let VotePolicy {
            threshold,
            quorum,
            window_seconds,
        } = policy;
        if threshold < 1
            || threshold > quorum
            || quorum > MAX_POLICY_QUORUM
            || !(60..=7 * 24 * 3600).contains(&window_seconds)
        {
            return Err(DomainError::InvalidPolicy);
        }
        self.limiter.check(&actor.user_uid, now)?;
        self.cases.policies.insert(server_id.into(), policy);
        let value = self.policy_item(server_id);
        let mut records = vec![Record::VotePolicy {
            server_id: server_id.to_owned(),
            policy,
            updated_at: now,
        }];
        self.audit(
            &mut records,
            server_id,
            None,
            &actor.user_uid,
            "policy_updated",
            &value,
            now,
        );
        Ok(Outcome::stored(value, records))
    }

    pub(super) fn proposal_status(&self, p: &Proposal, now: Millis) -> ProposalStatus {
        if p.status == ProposalStatus::Open && now >= p.expires_at {
            ProposalStatus::Expired
        } else {
            p.status
        }
    }

    fn tally(&self, proposal_id: &str) -> VoteTally {
        let mut t = VoteTally::default();
        for v in self.cases.votes.get(proposal_id).into_iter().flatten() {
            match v.value {
                VoteValue::Yes => t.yes += 1,
                VoteValue::No => t.no += 1,
                VoteValue::Abstain => t.abstain += 1,
            }
        }
        t
    }

    pub(super) fn proposal_item(&self, p: &Proposal, now: Millis) -> ProposalItem {
        ProposalItem {
            proposal_id: p.id.clone(),
            case_id: p.case_id.clone(),
            action_type: p.action_type.as_str(),
            duration_seconds: p.duration_seconds,
            proposed_by_uid: p.proposed_by_uid.to_string(),
            threshold: p.policy.threshold,
            quorum: p.policy.quorum,
            expires_at: rfc3339(p.expires_at),
            status: self.proposal_status(p, now).as_str(),
            votes: self.tally(&p.id),
        }
    }

    /// The staff who may vote on an action against `target`: moderators and above who
    /// outrank it.
    fn eligible_voters(&self, server_id: &str, target: &str) -> Vec<String> {
        let target_rank = self
            .roster
            .membership(server_id, target)
            .map_or(0, |m| m.role.rank());
        // The target's own role is not above itself, so it is never among them.
        let roles: Vec<Role> = Role::ALL
            .iter()
            .copied()
            .filter(|r| r.at_least(Role::Moderator) && r.rank() > target_rank)
            .collect();
        self.members_with(server_id, &roles)
    }

    /// `POST …/cases/{case_id}/actions/propose` (an eligible voter): `ban` (optionally timed,
    /// ≤ 365 days), `timeout_long` (1 h … 30 days) or `role_remove`, decided by votes under
    /// the policy of now. The same `Idempotency-Key` from the same proposer proposes once.
    pub fn propose(
        &mut self,
        actor: &Actor,
        server_id: &str,
        case_id: &str,
        ask: ActionAsk,
        now: Millis,
    ) -> Result<Outcome<ProposalItem>, DomainError> {
        self.directory.server(server_id)?;
        if let Some(key) = &ask.idempotency_key
            && let Some(p) = self.cases.proposals.values().find(|p| {
                p.server_id == server_id
                    && p.proposed_by_uid == actor.user_uid
                    && p.idempotency_key.as_deref() == Some(key.as_str())
            })
        {
            return Ok(Outcome::pure(self.proposal_item(p, now)));
        }
        if ask.action_type.is_immediate() {
            return Err(DomainError::InvalidAction(
                "kick, timeout_short and channel_lock are taken at once: actions/immediate",
            ));
        }
        // Who may not propose learns nothing of the case's state.
        let target = self.case_of(server_id, case_id)?.target_uid.clone();
        let eligible = self.eligible_voters(server_id, &target);
        if !eligible.iter().any(|v| *v == actor.user_uid.as_str()) {
            return Err(self.not_eligible(server_id, actor));
        }
        let case = self.actionable_case(server_id, case_id, now)?;
        let duration = match ask.action_type {
            ActionType::TimeoutLong => Some(bounded_from(
                ask.duration_seconds,
                MAX_TIMEOUT_SHORT_SECS + 1,
                MAX_TIMEOUT_LONG_SECS,
            )?),
            ActionType::Ban => ask
                .duration_seconds
                .map(|d| bounded(Some(d), d, MAX_BAN_SECS))
                .transpose()?,
            _ => {
                let role = self.current_role(server_id, &case.target_uid);
                if !matches!(role, Some(Role::Moderator | Role::Admin)) {
                    return Err(DomainError::InvalidAction(
                        "role_remove is for a moderator or an admin",
                    ));
                }
                None
            }
        };
        let mut records = Vec::new();
        for p in self.cases.proposals_of(case_id) {
            match self.proposal_status(p, now) {
                ProposalStatus::Open => return Err(DomainError::ProposalOpen),
                // Recorded as it is now, the window having run out.
                ProposalStatus::Expired if p.status == ProposalStatus::Open => {
                    records.push(Record::Proposal(Proposal {
                        status: ProposalStatus::Expired,
                        ..p.clone()
                    }));
                }
                _ => {}
            }
        }
        let policy = self.vote_policy(server_id);
        let count = u32::try_from(eligible.len()).unwrap_or(u32::MAX);
        if count < policy.quorum {
            return Err(DomainError::QuorumUnreachable {
                eligible: count,
                quorum: policy.quorum,
            });
        }
        self.limiter.check(&actor.user_uid, now)?;
        for r in &records {
            if let Record::Proposal(p) = r {
                self.cases.proposals.insert(p.id.clone(), p.clone());
            }
        }
        let proposal = Proposal {
            id: self.entropy.id("prop"),
            case_id: case_id.to_owned(),
            server_id: server_id.to_owned().into(),
            action_type: ask.action_type,
            duration_seconds: duration,
            proposed_by_uid: actor.user_uid.clone(),
            policy,
            expires_at: now + policy.window_seconds * 1000,
            status: ProposalStatus::Open,
            created_at: now,
            idempotency_key: ask.idempotency_key,
        };
        let mut case = case;
        case.status = CaseStatus::Voting;
        records.push(Record::Proposal(proposal.clone()));
        records.push(Record::Case(case.clone()));
        self.cases
            .proposals
            .insert(proposal.id.clone(), proposal.clone());
        let value = self.proposal_item(&proposal, now);
        self.audit(
            &mut records,
            server_id,
            Some(case_id),
            &actor.user_uid,
            "proposal_opened",
            &value,
            now,
        );
        let events = self.tell_staff(&case, CaseStatus::Voting, now);
        self.cases.cases.insert(case.id.clone(), case);
        Ok(Outcome::published(value, records, events))
    }

    fn not_eligible(&self, server_id: &str, actor: &Actor) -> DomainError {
        match self.current_role(server_id, &actor.user_uid) {
            None => DomainError::NotAMember,
            Some(_) => DomainError::Forbidden(Needs::HigherRank),
        }
    }

    /// `POST …/cases/{case_id}/votes {value}` (an eligible voter, once): the vote that meets
    /// the proposal's policy enforces it now; one after which it cannot pass rejects it.
    pub fn vote(
        &mut self,
        actor: &Actor,
        server_id: &str,
        case_id: &str,
        value: VoteValue,
        now: Millis,
    ) -> Result<Outcome<ProposalItem>, DomainError> {
        self.directory.server(server_id)?;
        let case = self.case_of(server_id, case_id)?.clone();
        // Who may not vote learns nothing of the case's proposals.
        let eligible = self.eligible_voters(server_id, &case.target_uid);
        if !eligible.iter().any(|v| *v == actor.user_uid.as_str()) {
            return Err(self.not_eligible(server_id, actor));
        }
        let proposal = {
            let mut ps: Vec<&Proposal> = self.cases.proposals_of(case_id).collect();
            ps.sort_by_key(|p| p.created_at);
            ps.last()
                .map(|p| (*p).clone())
                .ok_or(DomainError::NotFound(What::Proposal))?
        };
        if self.proposal_status(&proposal, now) != ProposalStatus::Open {
            return Err(DomainError::ProposalClosed);
        }
        if self
            .cases
            .votes
            .get(&proposal.id)
            .is_some_and(|v| v.iter().any(|v| v.voter_uid == actor.user_uid))
        {
            return Err(DomainError::AlreadyVoted);
        }
        self.limiter.check(&actor.user_uid, now)?;
        let vote = Vote {
            proposal_id: proposal.id.clone(),
            voter_uid: actor.user_uid.clone(),
            value,
            at: now,
        };
        self.cases.insert_vote(vote.clone());
        let mut records = vec![Record::Vote(vote)];
        #[derive(Serialize)]
        struct Cast<'a> {
            proposal_id: &'a str,
            value: &'static str,
        }
        self.audit(
            &mut records,
            server_id,
            Some(case_id),
            &actor.user_uid,
            "vote_cast",
            &Cast {
                proposal_id: &proposal.id,
                value: value.as_str(),
            },
            now,
        );
        let tally = self.tally(&proposal.id);
        let voted = tally.yes + tally.no + tally.abstain;
        let remaining = u32::try_from(eligible.len())
            .unwrap_or(u32::MAX)
            .saturating_sub(voted);
        let policy = proposal.policy;
        let mut events = Vec::new();
        let mut notices = Vec::new();
        let status = if tally.yes >= policy.threshold && voted >= policy.quorum {
            let enforced = self.enforce(
                actor,
                case,
                proposal.action_type,
                proposal.duration_seconds,
                None,
                now,
            )?;
            records.extend(enforced.records);
            events.extend(enforced.events);
            notices.extend(enforced.notices);
            ProposalStatus::Enforced
        } else if tally.yes + remaining < policy.threshold || voted + remaining < policy.quorum {
            let mut case = case;
            case.status = CaseStatus::Rejected;
            case.closed_at = Some(now);
            records.push(Record::Case(case.clone()));
            events.extend(self.tell_staff(&case, CaseStatus::Rejected, now));
            self.cases.cases.insert(case.id.clone(), case);
            ProposalStatus::Rejected
        } else {
            ProposalStatus::Open
        };
        let proposal = Proposal { status, ..proposal };
        if status != ProposalStatus::Open {
            records.push(Record::Proposal(proposal.clone()));
        }
        let value = self.proposal_item(&proposal, now);
        self.cases.proposals.insert(proposal.id.clone(), proposal);
        Ok(Outcome {
            value,
            records,
            events,
            notices,
        })
    }
}
