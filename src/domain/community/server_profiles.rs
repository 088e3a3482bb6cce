//! A user's profile in one server (wire contract Part D), in place of its instance-wide one:
//! saved, changed with `If-Match` and deleted by the user, and seen by the members of that
//! server everywhere a profile or a name shows there: `profile_updated`, the batch read with
//! the server named, the member list and mention names. The rule for what a server shows is
//! [`Community::profile_in`], the one place that answers it.

use std::collections::HashMap;

use super::{Actor, Admission, Community, MAX_PRESET_ID_CHARS, Outcome, ProfileChange};
use crate::domain::error::DomainError;
use crate::domain::ids::{ServerId, UserUid};
use crate::domain::model::{AvatarMode, Millis, Profile, ServerProfile};
use crate::domain::records::Record;
use crate::domain::text;
use crate::domain::views::{ProfileItem, ServerProfileItem};

/// Server profiles (cleared ones too: their version goes on) by (server, uid).
#[derive(Debug, Default)]
pub struct ServerProfiles {
    pub(super) by_member: HashMap<(ServerId, UserUid), ServerProfile>,
}

impl ServerProfiles {
    pub(super) fn insert(&mut self, p: ServerProfile) {
        self.by_member
            .insert((p.server_id.clone(), p.user_uid.clone()), p);
    }

    fn get(&self, server_id: &str, uid: &str) -> Option<&ServerProfile> {
        self.by_member
            .get(&(ServerId::from(server_id), UserUid::from(uid)))
    }
}

impl Community {
    /// The profile members of `server_id` see for `uid`: its override there if it has one,
    /// its instance-wide profile otherwise, with a version that counts changes of both.
    pub fn profile_in(&self, server_id: &str, uid: &str) -> (Profile, bool) {
        let global = self.profiles.profile_of(uid);
        match self.server_profiles.get(server_id, uid) {
            None => (global, false),
            Some(o) => {
                let version = global.version + o.version;
                let updated_at = global.updated_at.max(o.updated_at);
                if o.cleared {
                    (
                        Profile {
                            version,
                            updated_at,
                            ..global
                        },
                        false,
                    )
                } else {
                    (
                        Profile {
                            user_uid: global.user_uid,
                            display_name: o.display_name.clone(),
                            avatar_mode: o.avatar_mode,
                            avatar_preset_id: o.avatar_preset_id.clone(),
                            avatar_asset_id: o.avatar_asset_id.clone(),
                            version,
                            updated_at,
                        },
                        true,
                    )
                }
            }
        }
    }

    /// The name members of `server_id` see for `uid`.
    pub(super) fn display_name_in(&self, server_id: &str, uid: &str) -> String {
        match self.server_profiles.get(server_id, uid) {
            Some(o) if !o.cleared => o.display_name.clone(),
            _ => self.profiles.display_name(uid),
        }
    }

    /// The profile of `uid` as members of `server_id` see it, for the wire.
    pub fn profile_item_in(&self, server_id: &str, uid: &str) -> ProfileItem {
        ProfileItem::of(&self.profile_in(server_id, uid).0, self.urls())
    }

    fn server_profile_item(&self, server_id: &str, uid: &str) -> ServerProfileItem {
        let (profile, overridden) = self.profile_in(server_id, uid);
        ServerProfileItem {
            server_id: server_id.to_owned(),
            profile: ProfileItem::of(&profile, self.urls()),
            overridden,
        }
    }

    /// `GET /v1/servers/{id}/profile/me`: what the members of the server see of the caller
    /// (never a 404, which clients read as "not supported").
    pub fn get_server_profile(
        &self,
        actor: &Actor,
        server_id: &str,
    ) -> Result<ServerProfileItem, DomainError> {
        self.directory.server(server_id)?;
        Ok(self.server_profile_item(server_id, &actor.user_uid))
    }

    /// `PUT /v1/servers/{id}/profile/me` (a member, or a first contact of an open server):
    /// sets the caller's override there, starting from what the server showed, under the
    /// same rules as the instance-wide profile. Emits `profile_updated` to that server.
    pub fn put_server_profile(
        &mut self,
        actor: &Actor,
        server_id: &str,
        change: ProfileChange,
        now: Millis,
    ) -> Result<Outcome<ServerProfileItem>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        let (shown, _) = self.profile_in(server_id, &actor.user_uid);
        self.check_version(server_id, &actor.user_uid, &shown, change.if_match)?;
        let mut next = self
            .server_profiles
            .get(server_id, &actor.user_uid)
            .cloned()
            .unwrap_or_else(|| ServerProfile {
                server_id: server_id.to_owned().into(),
                user_uid: actor.user_uid.clone(),
                display_name: String::new(),
                avatar_mode: AvatarMode::Generated,
                avatar_preset_id: None,
                avatar_asset_id: None,
                version: 0,
                updated_at: 0,
                cleared: true,
            });
        if next.cleared {
            // A new override starts from the profile the server showed.
            next.display_name = shown.display_name.clone();
            next.avatar_mode = shown.avatar_mode;
            next.avatar_preset_id = shown.avatar_preset_id.clone();
            next.avatar_asset_id = shown.avatar_asset_id.clone();
        }
        let edited = self.apply_profile_change(
            &actor.user_uid,
            Profile {
                display_name: next.display_name.clone(),
                avatar_mode: next.avatar_mode,
                avatar_preset_id: next.avatar_preset_id.clone(),
                avatar_asset_id: next.avatar_asset_id.clone(),
                ..shown
            },
            change,
        )?;
        let mut records = Vec::new();
        self.admit_inner(
            server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            &mut records,
        )?;
        next.display_name = edited.display_name;
        next.avatar_mode = edited.avatar_mode;
        next.avatar_preset_id = edited.avatar_preset_id;
        next.avatar_asset_id = edited.avatar_asset_id;
        next.cleared = false;
        self.store_server_profile(next, now, records)
    }

    /// `DELETE /v1/servers/{id}/profile/me`: the server shows the instance-wide profile
    /// again (with a higher version). Deleting where there is no override changes nothing.
    pub fn delete_server_profile(
        &mut self,
        actor: &Actor,
        server_id: &str,
        if_match: Option<i64>,
        now: Millis,
    ) -> Result<Outcome<ServerProfileItem>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        let (shown, _) = self.profile_in(server_id, &actor.user_uid);
        self.check_version(server_id, &actor.user_uid, &shown, if_match)?;
        match self.server_profiles.get(server_id, &actor.user_uid) {
            Some(o) if !o.cleared => {
                let mut next = o.clone();
                next.cleared = true;
                self.store_server_profile(next, now, Vec::new())
            }
            _ => Ok(Outcome::stored(
                self.server_profile_item(server_id, &actor.user_uid),
                Vec::new(),
            )),
        }
    }

    /// `If-Match` against the version the server shows.
    fn check_version(
        &self,
        server_id: &str,
        uid: &str,
        shown: &Profile,
        if_match: Option<i64>,
    ) -> Result<(), DomainError> {
        match if_match {
            Some(expected) if expected != shown.version => Err(DomainError::ProfileConflict {
                current: Box::new(self.profile_item_in(server_id, uid)),
            }),
            _ => Ok(()),
        }
    }

    fn store_server_profile(
        &mut self,
        mut next: ServerProfile,
        now: Millis,
        mut records: Vec<Record>,
    ) -> Result<Outcome<ServerProfileItem>, DomainError> {
        next.version += 1;
        next.updated_at = now;
        let (server_id, uid) = (next.server_id.to_string(), next.user_uid.to_string());
        records.push(Record::ServerProfile(next.clone()));
        self.server_profiles.insert(next);
        let value = self.server_profile_item(&server_id, &uid);
        // Flat, as every profile_updated (wire contract A.7).
        let event = self.server_event(
            &mut records,
            &server_id,
            "profile_updated",
            &value.profile,
            now,
        );
        Ok(Outcome::published(value, records, vec![event]))
    }

    /// `change` applied to `current` under the profile rules (names NFC-normalized and
    /// bounded, preset ids bounded, only one's own avatar assets); used by the instance-wide
    /// profile and by server profiles alike.
    pub(super) fn apply_profile_change(
        &self,
        uid: &str,
        current: Profile,
        change: ProfileChange,
    ) -> Result<Profile, DomainError> {
        crate::domain::limits::optional_text_field("display_name", change.display_name.as_deref())?;
        crate::domain::limits::optional_text_field(
            "avatar_preset_id",
            change.avatar_preset_id.as_deref(),
        )?;
        crate::domain::limits::optional_text_field(
            "avatar_asset_id",
            change.avatar_asset_id.as_deref(),
        )?;
        let mut next = current;
        if let Some(name) = change.display_name {
            next.display_name =
                text::normalize_display_name(&name).map_err(DomainError::InvalidDisplayName)?;
        }
        if let Some(preset) = change.avatar_preset_id {
            if preset.chars().count() > MAX_PRESET_ID_CHARS {
                return Err(DomainError::InvalidAvatarPresetId);
            }
            next.avatar_preset_id = Some(preset).filter(|p| !p.is_empty());
        }
        if let Some(asset) = change.avatar_asset_id {
            if asset.is_empty() {
                next.avatar_asset_id = None;
            } else {
                match self.profiles.avatar_assets.get(&asset) {
                    Some(a) if a.owner_uid == uid => next.avatar_asset_id = Some(asset),
                    _ => return Err(DomainError::AvatarAssetForbidden),
                }
            }
        }
        if let Some(mode) = change.avatar_mode {
            next.avatar_mode = mode;
        }
        if next.avatar_mode == AvatarMode::Uploaded && next.avatar_asset_id.is_none() {
            return Err(DomainError::AvatarAssetRequired);
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Admission, ProfileChange};
    use crate::domain::model::HistoryVisibility;

    fn named(name: &str, if_match: Option<i64>) -> ProfileChange {
        ProfileChange {
            display_name: Some(name.into()),
            if_match,
            ..Default::default()
        }
    }

    #[test]
    fn an_override_is_seen_in_its_server_only_and_its_version_only_rises() {
        let mut c = community(HistoryVisibility::Joined);
        let alice = actor("uid_alice");
        c.admit(&alice, "home", Admission::Connect, 1).unwrap();
        c.put_profile(&alice, named("Alice", None), 2).unwrap();
        let before = c.get_server_profile(&alice, "home").unwrap();
        assert_eq!(
            (
                before.overridden,
                before.profile.display_name.as_str(),
                before.profile.profile_version
            ),
            (false, "Alice", 1)
        );
        let stale = c
            .put_server_profile(&alice, "home", named("Al", Some(0)), 3)
            .unwrap_err();
        assert_eq!((stale.status(), stale.code()), (409, "profile_conflict"));
        let set = c
            .put_server_profile(&alice, "home", named("Al the Great", Some(1)), 3)
            .unwrap();
        assert_eq!(set.value.profile.display_name, "Al the Great");
        assert_eq!(set.value.profile.profile_version, 2);
        assert_eq!(set.events.len(), 1);
        assert_eq!(set.events[0].kind, "profile_updated");
        assert!(set.events[0].payload.contains("\"user_uid\":\"uid_alice\""));
        assert!(
            set.events[0]
                .payload
                .contains("\"display_name\":\"Al the Great\"")
        );
        assert_eq!(
            c.profile_of("uid_alice").display_name,
            "Alice",
            "global unchanged"
        );
        assert_eq!(c.display_name_in("home", "uid_alice"), "Al the Great");
        // A global change shows in the server's version too, but not over the override.
        let global = c.put_profile(&alice, named("Alicia", Some(1)), 4).unwrap();
        assert_eq!(global.value.profile_version, 2);
        assert!(
            global.events[0]
                .payload
                .contains("\"display_name\":\"Al the Great\""),
            "the server that has an override is told about what it shows: {}",
            global.events[0].payload
        );
        assert_eq!(
            c.get_server_profile(&alice, "home")
                .unwrap()
                .profile
                .profile_version,
            3
        );
        let gone = c.delete_server_profile(&alice, "home", Some(3), 5).unwrap();
        assert_eq!(
            (
                gone.value.overridden,
                gone.value.profile.display_name.as_str(),
                gone.value.profile.profile_version
            ),
            (false, "Alicia", 4),
            "deleted: the global profile with a version above every earlier one"
        );
        let again = c.delete_server_profile(&alice, "home", None, 6).unwrap();
        assert!(again.records.is_empty() && again.events.is_empty());
        let bad = c
            .put_server_profile(&alice, "home", named(&"x".repeat(33), None), 7)
            .unwrap_err();
        assert_eq!(bad.code(), "invalid_display_name");
        assert_eq!(
            c.get_server_profile(&alice, "nowhere")
                .unwrap_err()
                .status(),
            404
        );
    }
}
