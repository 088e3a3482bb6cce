//! What the load generator needs from the API before it starts: the default server, a text
//! channel, and identities.

use serde::Deserialize;

use std::sync::Arc;

use crate::args::Common;
use crate::http;
use crate::net::Connector;

/// Which population a uid belongs to (its first byte), so the modes never share users.
#[derive(Debug, Clone, Copy)]
pub enum Population {
    Send = 0x01,
    FanoutSubscriber = 0x02,
    FanoutSender = 0x03,
    Idle = 0x04,
}

/// `uid_` + 8 hex, the shape the desktop client makes. Fixed per population and index, so
/// repeated runs reuse the same members instead of growing the server's member list.
pub fn uid(population: Population, index: usize) -> String {
    format!("uid_{:02x}{:06x}", population as u8, index & 0xff_ffff)
}

/// `desktop_` + 8 characters.
pub fn device(population: Population, index: usize) -> String {
    format!("desktop_{:02x}{:06x}", population as u8, index & 0xff_ffff)
}

/// A random 8-hex tag put in every message body of a run, so frames of other runs (or
/// other load generators) are not counted.
pub fn run_tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[derive(Debug, Clone)]
pub struct Place {
    pub server_id: String,
    pub channel_id: String,
}

#[derive(Deserialize)]
struct Capabilities {
    server_id: String,
}

#[derive(Deserialize)]
struct Channels {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    channels: Vec<Channel>,
}

#[derive(Deserialize)]
struct Channel {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

fn parse_json<T: for<'de> Deserialize<'de>>(mut body: Vec<u8>, what: &str) -> Result<T, String> {
    simd_json::serde::from_slice(&mut body).map_err(|e| format!("{what}: unexpected JSON: {e}"))
}

/// `server_id` of `GET /v1/client/capabilities`.
pub fn server_id_of(capabilities: Vec<u8>) -> Result<String, String> {
    Ok(parse_json::<Capabilities>(capabilities, "capabilities")?.server_id)
}

/// The first channel of type `text` in display order, from `GET /v1/servers/{id}/channels`.
pub fn first_text_channel(channels: Vec<u8>) -> Result<Option<String>, String> {
    let channels: Channels = parse_json(channels, "channels")?;
    Ok(channels
        .groups
        .into_iter()
        .flat_map(|g| g.channels)
        .find(|c| c.kind == "text")
        .map(|c| c.id))
}

/// What a posting run starts from: a connector planned for `connections`, the server's
/// authority, and the place found as the population's first user.
pub async fn prepare(
    common: &Common,
    population: Population,
    connections: usize,
    channel: Option<&str>,
) -> Result<(Arc<Connector>, String, Place), String> {
    let target = common.url.resolve()?;
    let connector = Arc::new(Connector::planned(target, connections, common.source_ips));
    let authority = common.url.authority.clone();
    let (uid0, device0) = (uid(population, 0), device(population, 0));
    let place = discover(
        &connector,
        &authority,
        &http::identity(&uid0, &device0),
        channel,
        common.timeout,
    )
    .await?;
    Ok((connector, authority, place))
}

/// Asks the server for its default server id, and for a text channel unless one is given.
/// `identity` is sent along (one of the run's own users).
pub async fn discover(
    connector: &Connector,
    authority: &str,
    identity: &[(&str, &str)],
    channel: Option<&str>,
    timeout: std::time::Duration,
) -> Result<Place, String> {
    let caps = http::get(
        connector,
        authority,
        "/v1/client/capabilities",
        identity,
        timeout,
    )
    .await?;
    let server_id = server_id_of(caps)?;
    let channel_id = match channel {
        Some(c) => c.to_string(),
        None => {
            let path = format!("/v1/servers/{server_id}/channels");
            let body = http::get(connector, authority, &path, identity, timeout).await?;
            first_text_channel(body)?
                .ok_or_else(|| format!("{path}: no text channel (give one with --channel)"))?
        }
    };
    Ok(Place {
        server_id,
        channel_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_have_the_client_shapes() {
        assert_eq!(uid(Population::Send, 0), "uid_01000000");
        assert_eq!(uid(Population::Idle, 9_999), "uid_0400270f");
        assert_eq!(
            device(Population::FanoutSubscriber, 255),
            "desktop_020000ff"
        );
        assert_eq!(uid(Population::FanoutSender, 3).len(), 12);
        assert_ne!(
            uid(Population::FanoutSender, 1),
            uid(Population::FanoutSubscriber, 1)
        );
        let tag = run_tag();
        assert_eq!(tag.len(), 8);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn picks_the_first_text_channel() {
        let body = br#"{"groups":[
            {"id":"g_voice","label":"Voice","kind":"voice","channels":[{"id":"ch_v","name":"Lounge","type":"voice"}]},
            {"id":"g_empty","label":"Empty","kind":"text","channels":[]},
            {"id":"g_text","label":"Text","kind":"text","channels":[
                {"id":"ch_general","name":"general","type":"text","unreadCount":3},
                {"id":"ch_two","name":"two","type":"text"}]}]}"#;
        assert_eq!(
            first_text_channel(body.to_vec()).unwrap().as_deref(),
            Some("ch_general")
        );
        assert_eq!(
            first_text_channel(br#"{"groups":[]}"#.to_vec()).unwrap(),
            None
        );
        assert!(first_text_channel(b"<html>".to_vec()).is_err());
    }

    #[test]
    fn reads_the_server_id() {
        let caps = br#"{"server_name":"Home","server_id":"srv_abc","transport":{"websocket":true},"limits":{"max_message_bytes":4000}}"#;
        assert_eq!(server_id_of(caps.to_vec()).unwrap(), "srv_abc");
        assert!(server_id_of(br#"{"server_name":"x"}"#.to_vec()).is_err());
    }
}
