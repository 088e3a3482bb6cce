//! Moderation: a kick (`Notice::VoiceKick`, or the member leaving the server) and a revoked
//! session take participants out of the rooms here at once, with no reconnect grace. Their
//! live signaling sockets come back for the caller to notify and close.

use super::{Participant, Rooms};
use crate::realtime::{Delivery, SocketRef};

impl Rooms {
    /// Removes `user_uid`'s participants in rooms of `server_id` (a kick): their live sockets
    /// come back (to be sent `rtc.kicked` and closed), with the frames for the others.
    pub fn evict(&mut self, server_id: &str, user_uid: &str) -> (Vec<SocketRef>, Vec<Delivery>) {
        self.evict_where(|p| p.server_id == server_id && p.view.user_uid == user_uid)
    }

    /// `user_uid` was put in a timeout in `server_id`: its participants there become
    /// listen-only at once, in the SFU (what they publish stops reaching the others) and in
    /// what a later offer may publish. The frames are what that changed for the others (a
    /// speaker stops speaking).
    pub fn mute(&mut self, server_id: &str, user_uid: &str) -> Vec<Delivery> {
        let numbers: Vec<u64> = self
            .rooms
            .values_mut()
            .flat_map(|room| room.participants.iter_mut())
            .filter(|(_, p)| p.server_id == server_id && p.view.user_uid == user_uid)
            .map(|(n, p)| {
                p.permissions = crate::rtc::ticket::Permissions::LISTEN_ONLY;
                *n
            })
            .collect();
        let Some(media) = self.media.as_mut() else {
            return Vec::new();
        };
        for n in numbers {
            media.restrict(
                n,
                crate::sfu::Permit {
                    audio: false,
                    camera: false,
                    screen: false,
                },
            );
        }
        self.media_deliveries()
    }

    /// Like [`Rooms::evict`], for the participants of one device of `user_uid` in any server
    /// (its session was revoked).
    pub fn evict_device(
        &mut self,
        user_uid: &str,
        device_id: &str,
    ) -> (Vec<SocketRef>, Vec<Delivery>) {
        self.evict_where(|p| p.view.user_uid == user_uid && p.view.device_id == device_id)
    }

    fn evict_where(
        &mut self,
        evicted: impl Fn(&Participant) -> bool,
    ) -> (Vec<SocketRef>, Vec<Delivery>) {
        let targets: Vec<(String, u64, Option<SocketRef>)> = self
            .rooms
            .iter()
            .flat_map(|(channel, room)| {
                room.participants
                    .iter()
                    .filter(|(_, p)| evicted(p))
                    .map(|(n, p)| {
                        (
                            channel.clone(),
                            *n,
                            p.detached_until.is_none().then_some(p.socket),
                        )
                    })
            })
            .collect();
        let mut sockets = Vec::new();
        let mut out = Vec::new();
        for (channel, number, socket) in targets {
            sockets.extend(socket);
            out.extend(self.remove(&channel, number));
        }
        (sockets, out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{claims, json, seat, sock};
    use super::*;

    fn left_to(deliveries: &[Delivery]) -> Vec<SocketRef> {
        use simd_json::prelude::*;
        assert!(
            deliveries
                .iter()
                .all(|d| json(&d.frame)["type"].as_str() == Some("rtc.participant.left"))
        );
        let mut to: Vec<SocketRef> = deliveries.iter().map(|d| d.to).collect();
        to.sort_unstable();
        to
    }

    #[test]
    fn a_kick_takes_a_user_out_of_one_server_and_a_revoked_session_one_device() {
        let mut rooms = Rooms::default();
        rooms
            .join(&claims("uid_a"), sock(1), "t", seat(10))
            .unwrap();
        let mut laptop = claims("uid_a");
        laptop.device_id = "dev_laptop".into();
        rooms.join(&laptop, sock(2), "t", seat(10)).unwrap();
        let mut elsewhere = claims("uid_a");
        elsewhere.server_id = "srv_other".into();
        elsewhere.channel_id = "ch_other".into();
        rooms.join(&elsewhere, sock(3), "t", seat(10)).unwrap();
        rooms
            .join(&claims("uid_b"), sock(4), "t", seat(10))
            .unwrap();

        // The session of dev_uid_a is revoked: its participants leave, in every server.
        let (mut sockets, others) = rooms.evict_device("uid_a", "dev_uid_a");
        sockets.sort_unstable();
        assert_eq!(sockets, [sock(1), sock(3)]);
        assert_eq!(left_to(&others), [sock(2), sock(4)]);
        assert_eq!(rooms.room_count(), 1, "the emptied room is gone");

        // A kick from srv takes the laptop too; nobody else is touched.
        let (sockets, others) = rooms.evict("srv", "uid_a");
        assert_eq!(sockets, [sock(2)]);
        assert_eq!(left_to(&others), [sock(4)]);
        let (sockets, others) = rooms.evict("srv_other", "uid_b");
        assert!(sockets.is_empty() && others.is_empty());
        assert_eq!(rooms.participants("ch_voice").len(), 1);
    }
}
