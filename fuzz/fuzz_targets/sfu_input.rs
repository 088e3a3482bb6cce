//! Feeds arbitrary offers (str0m's SDP parser and the SFU's own m-line and msid handling),
//! trickled candidates and datagrams from a stranger (routing and STUN parsing) to the SFU core:
//! it must never panic, a refused first offer must leave no connection behind, and a leaver
//! must leave nothing. The first byte picks what the rest is.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use openchatd::sfu::{Caps, Direction, Permit, Sfu};

const ALL: Permit = Permit { audio: true, camera: true, screen: true };

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut sfu = Sfu::new(50_000);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    sfu.add_participant(1, 1, Caps { audio: 4, video: 4 }, ALL, &[ip]);
    let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), 4000);
    match mode % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let direction = if mode & 0x80 == 0 { Direction::Publish } else { Direction::Subscribe };
            if sfu.accept_offer(1, direction, &text, now).is_err() {
                assert_eq!(sfu.connection_count(), 0);
            }
        }
        1 => {
            sfu.add_remote_candidate(1, Direction::Publish, &String::from_utf8_lossy(rest));
        }
        _ => {
            sfu.handle_datagram(now, source, rest);
            sfu.handle_timeout(now);
        }
    }
    sfu.remove_participant(1);
    assert_eq!(sfu.participant_count(), 0);
});
