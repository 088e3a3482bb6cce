//! Voice: `POST /v1/rtc/channels/{channel_id}/join-ticket` (wire contract A.8). The domain
//! decides (membership, voice channel of that server, ban, lock, timeout → listen-only); this
//! signs the ticket and adds what the client needs to connect.

use crate::domain::ids::ChannelId;
use serde::{Deserialize, Serialize};

use super::identity::require_actor;
use super::input::{json_body, path_id};
use super::servers::handler;
use super::{ApiError, json};
use crate::api::capabilities::websocket_url;
use crate::config::{IceServer, ReceiveCaps};
use crate::domain::community::commands::GrantTicket;
use crate::domain::text::is_valid_id;
use crate::domain::views::rfc3339;
use crate::rtc::ticket::{self, Claims, Permissions, TICKET_TTL_SECS};

#[derive(Deserialize)]
struct TicketIn {
    server_id: Option<String>,
}

#[derive(Serialize)]
struct TicketOut {
    ticket: String,
    channel_id: String,
    server_id: String,
    user_uid: String,
    device_id: String,
    expires_at: String,
    signaling_url: String,
    ice_servers: Vec<IceServer>,
    permissions: Permissions,
    subscribe_receive_policy: ReceiveCaps,
}

handler!(
    /// `POST /v1/rtc/channels/{channel_id}/join-ticket` with `{server_id}`.
    join_ticket, ctx => {
        let who = require_actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        let body: TicketIn = json_body(ctx)?;
        let server_id = body
            .server_id
            .filter(|s| is_valid_id(s))
            .ok_or_else(|| ApiError::bad_request("invalid_server_id", "server_id is required"))?;
        let now = crate::authority::now_millis() / 1000;
        let (jti, exp) = (ticket::new_jti(), now + TICKET_TTL_SECS);
        // The authority remembers the ticket, so a leave, kick, ban or revoke voids it.
        let grant = GrantTicket {
            actor: who.clone(),
            server_id: server_id.clone().into(),
            channel_id: channel_id.clone(),
            jti: jti.clone(),
            exp,
        };
        let permissions = ctx.app.authority.command(grant).await?;
        let claims = Claims {
            server_id: server_id.clone(),
            channel_id: channel_id.clone().into(),
            user_uid: who.user_uid.clone().into(),
            device_id: who.device_id.clone(),
            permissions,
            exp,
            jti,
        };
        let config = &ctx.app.config;
        json(200, &TicketOut {
            ticket: ticket::sign(&ctx.app.ticket_secret, &claims),
            expires_at: rfc3339(claims.exp * 1000),
            signaling_url: websocket_url(&config.public_base_url, "/v1/rtc/signaling"),
            ice_servers: config.rtc.ice_servers_for(&who.user_uid, now),
            subscribe_receive_policy: config.rtc.receive_caps.resolve(&server_id, &channel_id),
            permissions,
            channel_id: channel_id.into(),
            server_id,
            user_uid: who.user_uid.into(),
            device_id: who.device_id,
        })
    }
);
