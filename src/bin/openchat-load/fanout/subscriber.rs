//! A fan-out subscriber: one realtime socket, subscribed to the channel, that takes note of
//! every frame of this run it reads.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::timeout;

use super::Shared;
use crate::api::{self, Population};
use crate::net::Connector;
use crate::ws::{self, WsClient};

/// Initial read buffer of a subscriber's codec.
const SUBSCRIBER_READ_BUFFER: usize = 8 * 1024;

/// A set of sequence numbers.
pub(super) struct Seen(Vec<u64>);

impl Seen {
    pub(super) fn new(len: usize) -> Seen {
        Seen(vec![0; len.div_ceil(64)])
    }

    /// Adds `i`; false when it was already there.
    pub(super) fn insert(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    pub(super) fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

pub(super) struct SubscriberEnd {
    pub(super) connected: bool,
    pub(super) error: Option<String>,
    pub(super) seen: Seen,
    pub(super) duplicates: u64,
    pub(super) pings: u64,
}

pub(super) struct Subscriber {
    pub(super) index: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) connector: Arc<Connector>,
    pub(super) authority: String,
    pub(super) server_id: String,
    pub(super) channel_id: String,
    pub(super) permits: Arc<Semaphore>,
    pub(super) limit: Duration,
    pub(super) total: usize,
}

impl Subscriber {
    pub(super) async fn run(self, mut stop: watch::Receiver<bool>) -> SubscriberEnd {
        let mut end = SubscriberEnd {
            connected: false,
            error: None,
            seen: Seen::new(self.total),
            duplicates: 0,
            pings: 0,
        };
        let uid = api::uid(Population::FanoutSubscriber, self.index);
        let device = api::device(Population::FanoutSubscriber, self.index);
        let path = ws::realtime_path(&self.server_id, &uid, &device);
        let subscribe = format!(
            r#"{{"type":"chat.subscribe","request_id":"1","payload":{{"channel_id":{}}}}}"#,
            simd_json::to_string(&self.channel_id).unwrap_or_default()
        );
        let opened = {
            let _permit = self.permits.acquire().await;
            timeout(self.limit, async {
                let mut client = WsClient::connect(
                    &self.connector,
                    &self.authority,
                    &path,
                    SUBSCRIBER_READ_BUFFER,
                )
                .await?;
                client.send_text(subscribe).await?;
                Ok::<_, ws::WsError>(client)
            })
            .await
        };
        let mut client = match opened {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                end.error = Some(e.to_string());
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                return end;
            }
            Err(_) => {
                end.error = Some("connect and subscribe timed out".into());
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                return end;
            }
        };
        end.connected = true;
        self.shared.connected.fetch_add(1, Ordering::Relaxed);

        let shared = &self.shared;
        let (seen, duplicates) = (&mut end.seen, &mut end.duplicates);
        let mut snapshot = false;
        let served = client
            .serve(&mut stop, |text, at| {
                if let Some(seq) = ws::created_seq(text, &shared.run) {
                    let seq = seq as usize;
                    if seq < self.total {
                        if seen.insert(seq) {
                            shared.frame(seq, at);
                        } else {
                            *duplicates += 1;
                        }
                    }
                } else if !snapshot && text.contains("\"chat.presence.snapshot\"") {
                    snapshot = true;
                    shared.snapshots.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await;
        match served {
            Ok(pings) => end.pings = pings,
            Err((e, pings)) => {
                end.pings = pings;
                end.error = Some(e.to_string());
            }
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_set() {
        let mut s = Seen::new(130);
        assert!(s.insert(0));
        assert!(s.insert(129));
        assert!(!s.insert(129));
        assert!(s.contains(0) && s.contains(129) && !s.contains(64));
    }
}
