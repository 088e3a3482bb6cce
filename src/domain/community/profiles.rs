//! Profiles and avatar assets: the profile of any uid (a default one for a uid that never
//! saved one), saving a profile (with `If-Match` and the avatar's ownership), registering an
//! uploaded avatar and the batch read.

use crate::domain::ids::{ServerId, UserUid};
use std::collections::{HashMap, HashSet};

use super::{Actor, Community, MAX_PROFILES_PER_BATCH, Outcome, ProfileChange};
use crate::domain::error::DomainError;
use crate::domain::model::{AvatarAsset, AvatarMode, Millis, Profile};
use crate::domain::records::Record;
use crate::domain::text;
use crate::domain::views::{AvatarUploaded, ProfileItem, Profiles};

/// Saved profiles by uid, and avatar assets by id.
#[derive(Debug, Default)]
pub struct ProfileStore {
    pub(super) by_uid: HashMap<UserUid, Profile>,
    pub(super) avatar_assets: HashMap<String, AvatarAsset>,
}

impl ProfileStore {
    /// The uid's profile, or the default one for a uid that never saved one.
    pub fn profile_of(&self, uid: &str) -> Profile {
        self.by_uid.get(uid).cloned().unwrap_or_else(|| Profile {
            user_uid: uid.to_owned().into(),
            display_name: uid.chars().take(text::DISPLAY_NAME_MAX_CHARS).collect(),
            avatar_mode: AvatarMode::Generated,
            avatar_preset_id: None,
            avatar_asset_id: None,
            version: 0,
            updated_at: 0,
        })
    }

    pub(super) fn display_name(&self, uid: &str) -> String {
        self.by_uid
            .get(uid)
            .map(|p| p.display_name.clone())
            .unwrap_or_else(|| uid.to_owned())
    }
}

impl Community {
    /// The uid's profile, or the default one for a uid that never saved one.
    pub fn profile_of(&self, uid: &str) -> Profile {
        self.profiles.profile_of(uid)
    }

    pub fn profile_item(&self, uid: &str) -> ProfileItem {
        ProfileItem::of(&self.profile_of(uid), self.urls())
    }

    /// `PUT /v1/profile/me`; emits `profile_updated` to every server the user belongs to.
    pub fn put_profile(
        &mut self,
        actor: &Actor,
        change: ProfileChange,
        now: Millis,
    ) -> Result<Outcome<ProfileItem>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        let current = self.profile_of(&actor.user_uid);
        if let Some(expected) = change.if_match
            && expected != current.version
        {
            return Err(DomainError::ProfileConflict {
                current: Box::new(ProfileItem::of(&current, self.urls())),
            });
        }
        let mut next = self.apply_profile_change(&actor.user_uid, current.clone(), change)?;
        next.version = current.version + 1;
        next.updated_at = now;
        let mut records = vec![Record::Profile(next.clone())];
        self.profiles
            .by_uid
            .insert(actor.user_uid.clone(), next.clone());
        let item = ProfileItem::of(&next, self.urls());
        // The event's payload is the profile itself, flat (wire contract A.7): the client reads
        // `payload.user_uid` and drops a `{profile: …}` wrapper silently. Each server is told
        // what it shows, which is its override where the user has one.
        let mut servers: Vec<ServerId> = self
            .roster
            .user_servers
            .get(&actor.user_uid)
            .map(|s| {
                s.iter()
                    .filter(|id| self.current_role(id, &actor.user_uid).is_some())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        servers.sort();
        let events = servers
            .iter()
            .map(|id| {
                let shown = self.profile_item_in(id, &actor.user_uid);
                self.server_event(&mut records, id, "profile_updated", &shown, now)
            })
            .collect();
        Ok(Outcome {
            value: item,
            records,
            events,
            notices: Vec::new(),
        })
    }

    /// Registers an avatar the API layer has checked and stored.
    pub fn add_avatar_asset(&mut self, asset: AvatarAsset) -> Outcome<AvatarUploaded> {
        let value = AvatarUploaded {
            avatar_asset_id: asset.id.clone(),
            avatar_url: self.urls().avatar(&asset.id),
            width: asset.width,
            height: asset.height,
            content_type: asset.content_type.clone(),
            bytes: asset.bytes,
        };
        let records = vec![Record::AvatarAsset(asset.clone())];
        self.profiles.avatar_assets.insert(asset.id.clone(), asset);
        Outcome::stored(value, records)
    }

    /// The stored blob behind an avatar asset id.
    pub fn avatar_asset(&self, asset_id: &str) -> Option<&AvatarAsset> {
        self.profiles.avatar_assets.get(asset_id)
    }

    /// `GET /v1/profiles:batch`: the profiles as members of `server_id` see them (server
    /// profiles in place of instance-wide ones). Without a server named, an instance that
    /// holds one server answers for it (today's client names none, and its cache is per
    /// server); one that holds several answers the instance-wide profiles, so a name chosen
    /// for one server never shows in another.
    pub fn profiles(
        &self,
        uids: &[String],
        server_id: Option<&str>,
    ) -> Result<Profiles, DomainError> {
        if uids.len() > MAX_PROFILES_PER_BATCH {
            return Err(DomainError::TooManyProfiles);
        }
        let server = match server_id {
            Some(id) => Some(self.directory.server(id)?.id.as_str()),
            None if self.directory.servers.len() == 1 => {
                self.directory.servers.keys().next().map(|id| id.as_str())
            }
            None => None,
        };
        let mut seen = HashSet::new();
        Ok(Profiles {
            profiles: uids
                .iter()
                .filter(|u| seen.insert(u.as_str()))
                .map(|u| match server {
                    Some(server) => self.profile_item_in(server, u),
                    None => self.profile_item(u),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Admission, ProfileChange};
    use crate::domain::model::{AvatarAsset, AvatarMode, HistoryVisibility};

    #[test]
    fn profiles_default_conflict_and_avatar_ownership() {
        let mut c = community(HistoryVisibility::Joined);
        let alice = actor("uid_alice");
        let fresh = c.profile_item("uid_never_seen");
        assert_eq!(
            (fresh.profile_version, fresh.display_name.as_str()),
            (0, "uid_never_seen")
        );
        c.admit(&alice, "home", Admission::Connect, 1).unwrap();
        let saved = c
            .put_profile(
                &alice,
                ProfileChange {
                    display_name: Some("Cafe\u{301}".into()),
                    if_match: Some(0),
                    ..Default::default()
                },
                2,
            )
            .unwrap();
        assert_eq!(saved.value.display_name, "Café", "names are NFC-normalized");
        assert_eq!(saved.value.profile_version, 1);
        assert_eq!(
            saved.events.len(),
            1,
            "one profile_updated per server of the user"
        );
        assert_eq!(saved.events[0].kind, "profile_updated");
        let stale = c
            .put_profile(
                &alice,
                ProfileChange {
                    display_name: Some("Other".into()),
                    if_match: Some(0),
                    ..Default::default()
                },
                3,
            )
            .unwrap_err();
        assert_eq!((stale.status(), stale.code()), (409, "profile_conflict"));
        assert!(stale.details().unwrap().contains("\"profile_version\":1"));
        let too_long = c
            .put_profile(
                &alice,
                ProfileChange {
                    display_name: Some("x".repeat(33)),
                    ..Default::default()
                },
                3,
            )
            .unwrap_err();
        assert_eq!(too_long.code(), "invalid_display_name");
        let asset = AvatarAsset {
            id: "av_1".into(),
            owner_uid: "uid_bob".into(),
            blob: "00".repeat(32),
            content_type: "image/png".into(),
            width: 1,
            height: 1,
            bytes: 10,
            created_at: 1,
        };
        c.add_avatar_asset(asset);
        let theft = c
            .put_profile(
                &alice,
                ProfileChange {
                    avatar_mode: Some(AvatarMode::Uploaded),
                    avatar_asset_id: Some("av_1".into()),
                    ..Default::default()
                },
                4,
            )
            .unwrap_err();
        assert_eq!(theft.code(), "avatar_asset_forbidden");
        let bob = actor("uid_bob");
        let ok = c
            .put_profile(
                &bob,
                ProfileChange {
                    avatar_mode: Some(AvatarMode::Uploaded),
                    avatar_asset_id: Some("av_1".into()),
                    ..Default::default()
                },
                5,
            )
            .unwrap();
        assert_eq!(
            ok.value.avatar_url.as_deref(),
            Some("https://chat.example.test/v1/profile/avatar/av_1")
        );
        assert_eq!(
            c.profiles(&vec!["u".to_string(); 101], None)
                .unwrap_err()
                .code(),
            "too_many_profiles"
        );
    }
}
