//! The commands of the MLS delivery service (wire contract Part C); their rules are in
//! `crate::domain::community::e2ee`.

use super::Command;
use crate::domain::community::e2ee::devices::LinkState;
use crate::domain::community::e2ee::mailbox::{BackupVersion, Deleted, Sent};
use crate::domain::community::e2ee::{
    ClaimedPackage, CommitFacts, CommitOut, EnvelopeIn, LinkStarted, UploadOut,
};
use crate::domain::community::{Actor, Community, Outcome};
use crate::domain::error::DomainError;
use crate::domain::keys::KeyPackageRow;
use crate::domain::model::Millis;

macro_rules! key_command {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? } -> $out:ty, $label:literal,
     |$c:ident, $s:ident, $now:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $(pub $field: $ty),*
        }

        impl Command for $name {
            type Output = $out;
            const NAME: &'static str = $label;
            fn run(self, $c: &mut Community, $now: Millis) -> Result<Outcome<$out>, DomainError> {
                let $s = self;
                $body
            }
        }
    };
}

key_command!(
    /// `POST /v1/keys/packages`: validated packages of the asker's device.
    UploadPackages { actor: Actor, packages: Vec<KeyPackageRow> } -> UploadOut, "upload_key_packages",
    |c, s, now| c.upload_packages(&s.actor, s.packages, now)
);

key_command!(
    /// `POST /v1/keys/packages:claim`.
    ClaimPackages { actor: Actor, user_uids: Vec<String> } -> Vec<ClaimedPackage>, "claim_key_packages",
    |c, s, now| c.claim_packages(&s.actor, &s.user_uids, now)
);

key_command!(
    /// `POST /v1/channels/{id}/commits`: a commit bundle the shard validated.
    AcceptCommit { actor: Actor, facts: CommitFacts } -> CommitOut, "accept_commit",
    |c, s, now| c.accept_commit(&s.actor, s.facts, now)
);

key_command!(
    /// `POST /v1/keys/envelopes`.
    SendEnvelopes { actor: Actor, envelopes: Vec<EnvelopeIn> } -> Sent, "send_envelopes",
    |c, s, now| c.send_envelopes(&s.actor, s.envelopes, now)
);

key_command!(
    /// `POST /v1/keys/mailbox:ack`.
    AckMailbox { actor: Actor, up_to_seq: i64 } -> Deleted, "ack_mailbox",
    |c, s, now| c.ack_mailbox(&s.actor, s.up_to_seq, now)
);

key_command!(
    /// `PUT /v1/keys/backup`.
    PutBackup { actor: Actor, ciphertext: String, kdf_metadata: String, if_match: Option<i64> }
        -> BackupVersion, "put_backup",
    |c, s, now| c.put_backup(&s.actor, s.ciphertext, s.kdf_metadata, s.if_match, now)
);

key_command!(
    /// `DELETE /v1/devices/{device_id}`.
    RevokeDevice { actor: Actor, device_id: String } -> (), "revoke_device",
    |c, s, now| c.revoke_device(&s.actor, &s.device_id, now)
);

key_command!(
    /// `POST /v1/devices/link/start` (no session).
    StartLink { user_uid: String, device_id: String, public_key: String } -> LinkStarted, "start_link",
    |c, s, now| c.start_link(&s.user_uid, &s.device_id, &s.public_key, now)
);

key_command!(
    /// `POST /v1/devices/link/confirm`.
    ConfirmLink { actor: Actor, request_id: String, link_code: String } -> LinkState, "confirm_link",
    |c, s, now| c.confirm_link(&s.actor, &s.request_id, &s.link_code, now)
);
