//! Which uid a key may sign in as (wire contract B.1), and the approved identity bindings that
//! let a key take a uid other than the one derived from it.
//!
//! The rule: a key owns its derived uid (`crate::auth::derive_user_uid`). Any other uid is
//! taken only when it is already bound to that key (a device of the uid signed in with it), or
//! when an owner or admin approved `{user_uid, public_key}` (a binding, stored with who approved
//! it and when, so the approval is audited), or when the operator configured it
//! (`OPENCHAT_DEFAULT_SERVER_OWNER_UID` with `OPENCHAT_DEFAULT_SERVER_OWNER_KEY`). Nobody takes
//! a uid by asking for it first.
//!
//! This module holds the [`Bindings`] sub-store and the decisions as pure functions; the
//! community state machine calls them with its devices and memberships.

use std::collections::HashMap;

use super::error::{DomainError, Needs};
use super::model::{Device, Millis, Role};

/// The `approved_by_uid` of the binding the operator configured: not a valid uid (it has a
/// `:`), so it cannot be mistaken for a member's approval.
pub const APPROVED_BY_CONFIGURATION: &str = "config:OPENCHAT_DEFAULT_SERVER_OWNER_KEY";

/// An approved binding of a uid to a key, kept as its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityBinding {
    pub user_uid: String,
    /// base64url (unpadded) of the 32 key bytes.
    pub public_key: String,
    /// The server whose owner or admin approved it.
    pub server_id: String,
    pub approved_by_uid: String,
    pub approved_at: Millis,
}

/// The answer to an approval (wire shape): the binding as stored.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct BindingView {
    pub server_id: String,
    pub user_uid: String,
    pub public_key: String,
    pub approved_by_uid: String,
    pub approved_at: String,
}

impl BindingView {
    pub fn of(binding: &IdentityBinding) -> BindingView {
        BindingView {
            server_id: binding.server_id.clone(),
            user_uid: binding.user_uid.clone(),
            public_key: binding.public_key.clone(),
            approved_by_uid: binding.approved_by_uid.clone(),
            approved_at: super::views::rfc3339(binding.approved_at),
        }
    }
}

/// Every approved binding, by uid (a uid has at most one key).
#[derive(Debug, Default)]
pub struct Bindings {
    by_uid: HashMap<String, IdentityBinding>,
}

impl Bindings {
    pub fn new(bindings: Vec<IdentityBinding>) -> Bindings {
        Bindings {
            by_uid: bindings
                .into_iter()
                .map(|b| (b.user_uid.clone(), b))
                .collect(),
        }
    }

    pub fn get(&self, uid: &str) -> Option<&IdentityBinding> {
        self.by_uid.get(uid)
    }

    pub fn insert(&mut self, binding: IdentityBinding) {
        self.by_uid.insert(binding.user_uid.clone(), binding);
    }
}

/// Whether `uid` is bound to a key other than `key`: by a live device, or by a binding.
pub fn bound_elsewhere<'a>(
    uid: &str,
    key: &str,
    binding: Option<&IdentityBinding>,
    devices: impl Iterator<Item = &'a Device>,
) -> bool {
    // A device linked to the uid (Part C) binds its own key too.
    let mut linked = false;
    let mut other = false;
    for d in devices.filter(|d| d.user_uid == uid && d.revoked_at.is_none()) {
        if d.public_key == key {
            linked = true;
        } else {
            other = true;
        }
    }
    !linked && (other || binding.is_some_and(|b| b.public_key != key))
}

/// The uid a sign-in with `key` (canonical spelling) gets. `derived` is the key's own uid,
/// `requested` what the client asked for, `binding` the approved binding of the requested uid,
/// `devices` every known device.
pub fn sign_in_uid<'a>(
    derived: &str,
    requested: Option<&str>,
    key: &str,
    binding: Option<&IdentityBinding>,
    devices: impl Iterator<Item = &'a Device> + Clone,
) -> Result<String, DomainError> {
    let uid = requested.unwrap_or(derived);
    if bound_elsewhere(uid, key, binding, devices.clone()) {
        return Err(DomainError::KeyMismatch);
    }
    let allowed = uid == derived
        || binding.is_some_and(|b| b.public_key == key)
        || devices
            .clone()
            .any(|d| d.user_uid == uid && d.revoked_at.is_none() && d.public_key == key);
    if allowed {
        Ok(uid.to_owned())
    } else {
        Err(DomainError::BindingRequired)
    }
}

/// Whether an approver with `approver_role` in a server may bind a uid whose role there is
/// `target_role` (`None`: a past member). Each other server where the target is an admin or
/// the owner is given as `(approver's role there, target's role there)`: binding hands over
/// those roles too, so the approver must own those servers (and the target must not).
pub fn may_approve(
    approver_role: Option<Role>,
    target_role: Option<Role>,
    elsewhere: impl Iterator<Item = (Option<Role>, Role)>,
) -> Result<(), DomainError> {
    let Some(approver) = approver_role.filter(|r| r.at_least(Role::Admin)) else {
        return Err(DomainError::Forbidden(Needs::Admin));
    };
    let outranked = || DomainError::Forbidden(Needs::RankInEveryServer);
    if target_role.is_some_and(|t| t.rank() >= approver.rank()) {
        return Err(outranked());
    }
    for (approver_there, target_there) in elsewhere {
        if approver_there != Some(Role::Owner) || target_there == Role::Owner {
            return Err(outranked());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, uid: &str, key: &str) -> Device {
        Device {
            device_id: id.to_owned(),
            user_uid: uid.to_owned().into(),
            public_key: key.to_owned(),
            created_at: 1,
            revoked_at: None,
        }
    }

    fn binding(uid: &str, key: &str) -> IdentityBinding {
        IdentityBinding {
            user_uid: uid.to_owned(),
            public_key: key.to_owned(),
            server_id: "home".to_owned(),
            approved_by_uid: "uid_admin".to_owned(),
            approved_at: 5,
        }
    }

    #[test]
    fn a_key_gets_its_derived_uid() {
        let none: Vec<Device> = Vec::new();
        assert_eq!(
            sign_in_uid("uid_d", None, "K", None, none.iter()).unwrap(),
            "uid_d"
        );
        assert_eq!(
            sign_in_uid("uid_d", Some("uid_d"), "K", None, none.iter()).unwrap(),
            "uid_d"
        );
    }

    #[test]
    fn asking_for_another_uid_needs_a_binding() {
        let none: Vec<Device> = Vec::new();
        let refused = sign_in_uid("uid_d", Some("uid_legacy"), "K", None, none.iter()).unwrap_err();
        assert_eq!(
            (refused.status(), refused.code()),
            (403, "binding_required")
        );
        // Approved for this key: granted.
        let b = binding("uid_legacy", "K");
        assert_eq!(
            sign_in_uid("uid_d", Some("uid_legacy"), "K", Some(&b), none.iter()).unwrap(),
            "uid_legacy"
        );
        // Approved for another key: that uid belongs to someone.
        let other = binding("uid_legacy", "K2");
        let refused =
            sign_in_uid("uid_d", Some("uid_legacy"), "K", Some(&other), none.iter()).unwrap_err();
        assert_eq!(
            (refused.status(), refused.code()),
            (409, "identity_key_mismatch")
        );
    }

    #[test]
    fn a_uid_already_bound_to_the_key_is_granted_and_to_another_key_is_a_conflict() {
        let devices = [device("d1", "uid_legacy", "K"), device("d2", "uid_x", "K2")];
        assert_eq!(
            sign_in_uid("uid_d", Some("uid_legacy"), "K", None, devices.iter()).unwrap(),
            "uid_legacy"
        );
        let refused = sign_in_uid("uid_d", Some("uid_x"), "K", None, devices.iter()).unwrap_err();
        assert_eq!(refused.code(), "identity_key_mismatch");
        // A revoked device binds nothing.
        let mut revoked = device("d3", "uid_y", "K2");
        revoked.revoked_at = Some(2);
        let refused = sign_in_uid("uid_d", Some("uid_y"), "K", None, [revoked].iter()).unwrap_err();
        assert_eq!(refused.code(), "binding_required");
    }

    #[test]
    fn even_the_derived_uid_is_refused_when_another_key_holds_it() {
        let devices = [device("d1", "uid_d", "K2")];
        let refused = sign_in_uid("uid_d", None, "K", None, devices.iter()).unwrap_err();
        assert_eq!(refused.code(), "identity_key_mismatch");
    }

    #[test]
    fn approval_needs_a_higher_role() {
        use Role::*;
        let none = std::iter::empty;
        assert!(may_approve(Some(Owner), Some(Member), none()).is_ok());
        assert!(may_approve(Some(Owner), Some(Admin), none()).is_ok());
        assert!(may_approve(Some(Admin), Some(Moderator), none()).is_ok());
        assert!(may_approve(Some(Admin), None, none()).is_ok());
        assert_eq!(
            may_approve(Some(Admin), Some(Admin), none())
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            may_approve(Some(Admin), Some(Owner), none())
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            may_approve(Some(Moderator), Some(Member), none())
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            may_approve(None, Some(Member), none())
                .unwrap_err()
                .status(),
            403
        );
        // The target administers another server: only its owner may hand that over.
        assert!(
            may_approve(
                Some(Owner),
                Some(Member),
                [(Some(Owner), Admin)].into_iter()
            )
            .is_ok()
        );
        assert!(
            may_approve(
                Some(Owner),
                Some(Member),
                [(Some(Admin), Admin)].into_iter()
            )
            .is_err()
        );
        assert!(may_approve(Some(Owner), Some(Member), [(None, Admin)].into_iter()).is_err());
        assert!(
            may_approve(
                Some(Owner),
                Some(Member),
                [(Some(Owner), Owner)].into_iter()
            )
            .is_err()
        );
    }

    #[test]
    fn bindings_store_one_key_per_uid() {
        let mut store = Bindings::new(vec![binding("uid_a", "K")]);
        assert_eq!(store.get("uid_a").unwrap().public_key, "K");
        assert!(store.get("uid_b").is_none());
        store.insert(binding("uid_b", "K2"));
        assert_eq!(store.get("uid_b").unwrap().approved_by_uid, "uid_admin");
        assert!(!crate::domain::text::is_valid_id(APPROVED_BY_CONFIGURATION));
    }
}
