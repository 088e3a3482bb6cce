//! The route classes `/metrics` counts HTTP requests by: a handful of stable labels an operator
//! can put on a dashboard, decided from the path alone (so a 404 for an unknown path still has a
//! class, `other`, and an attacker cannot mint label values).

/// One class of endpoints. The discriminant is the index into [`RouteClass::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `/healthz`, `/readyz`, `/metrics`.
    Probe,
    /// The capabilities document.
    Capabilities,
    /// Sign-in challenges and sessions, and the server-scoped verified sessions.
    Auth,
    /// Channel history, posts, edits, deletes, read acks, mention resolution.
    Messages,
    /// Attachment and avatar downloads.
    Blobs,
    /// Devices, linking, key packages, mailboxes, backups, MLS epochs and commits.
    Keys,
    /// Roles, permissions, moderation cases, votes, the audit.
    Moderation,
    /// Voice join tickets and the signaling socket.
    Rtc,
    /// The realtime socket.
    Realtime,
    /// Servers, channels, layout, members, invites, profiles, settings.
    Servers,
    /// Anything else (unknown paths).
    Other,
}

impl RouteClass {
    pub const ALL: [RouteClass; 11] = [
        RouteClass::Probe,
        RouteClass::Capabilities,
        RouteClass::Auth,
        RouteClass::Messages,
        RouteClass::Blobs,
        RouteClass::Keys,
        RouteClass::Moderation,
        RouteClass::Rtc,
        RouteClass::Realtime,
        RouteClass::Servers,
        RouteClass::Other,
    ];

    /// The label values, in the order of [`RouteClass::ALL`].
    pub const LABELS: [&'static str; 11] = [
        "probe",
        "capabilities",
        "auth",
        "messages",
        "blobs",
        "keys",
        "moderation",
        "rtc",
        "realtime",
        "servers",
        "other",
    ];

    pub fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }

    /// The class of a request for `path` (without its query).
    pub fn of(path: &str) -> RouteClass {
        let mut segments = path.trim_start_matches('/').split('/');
        let first = segments.next().unwrap_or("");
        match first {
            "healthz" | "readyz" | "metrics" => return RouteClass::Probe,
            "client" => return RouteClass::Capabilities,
            "v1" => {}
            _ => return RouteClass::Other,
        }
        let section = segments.next().unwrap_or("");
        match section {
            "client" => RouteClass::Capabilities,
            "auth" => RouteClass::Auth,
            "attachments" => RouteClass::Blobs,
            "keys" | "devices" | "users" => RouteClass::Keys,
            "rtc" => RouteClass::Rtc,
            "realtime" => RouteClass::Realtime,
            "invites" | "profiles:batch" => RouteClass::Servers,
            "profile" => match (segments.next(), segments.next()) {
                (Some("avatar"), Some(_)) => RouteClass::Blobs,
                _ => RouteClass::Servers,
            },
            "channels" => match segments.nth(1).unwrap_or("") {
                "messages" | "read-ack" | "mentions:resolve" => RouteClass::Messages,
                "commits" | "epoch" => RouteClass::Keys,
                _ => RouteClass::Other,
            },
            "servers" => match segments.nth(1).unwrap_or("") {
                "sessions" => RouteClass::Auth,
                "read-acks" => RouteClass::Messages,
                "moderation" | "roles" => RouteClass::Moderation,
                "channels" if segments.nth(1) == Some("permissions") => RouteClass::Moderation,
                _ => RouteClass::Servers,
            },
            _ => RouteClass::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RouteClass::{self, *};

    #[test]
    fn every_route_has_the_class_a_dashboard_expects() {
        let cases = [
            ("/healthz", Probe),
            ("/readyz", Probe),
            ("/metrics", Probe),
            ("/client/capabilities", Capabilities),
            ("/v1/client/capabilities", Capabilities),
            ("/v1/auth/challenge", Auth),
            ("/v1/auth/session", Auth),
            ("/v1/servers/s/sessions", Auth),
            ("/v1/servers/s/sessions/challenge", Auth),
            ("/v1/channels/c/messages", Messages),
            ("/v1/channels/c/messages/m", Messages),
            ("/v1/channels/c/read-ack", Messages),
            ("/v1/channels/c/mentions:resolve", Messages),
            ("/v1/servers/s/read-acks", Messages),
            ("/v1/attachments/a", Blobs),
            ("/v1/profile/avatar/x", Blobs),
            ("/v1/profile/avatar", Servers),
            ("/v1/profile/me", Servers),
            ("/v1/profiles:batch", Servers),
            ("/v1/keys/packages:claim", Keys),
            ("/v1/devices/link/start", Keys),
            ("/v1/users/u/devices", Keys),
            ("/v1/channels/c/commits", Keys),
            ("/v1/channels/c/epoch", Keys),
            ("/v1/servers/s/moderation/cases/k/votes", Moderation),
            ("/v1/servers/s/roles", Moderation),
            ("/v1/servers/s/channels/c/permissions", Moderation),
            ("/v1/servers/s/channels", Servers),
            ("/v1/servers/s/channel-layout", Servers),
            ("/v1/servers", Servers),
            ("/v1/invites/x/redeem", Servers),
            ("/v1/rtc/channels/c/join-ticket", Rtc),
            ("/v1/rtc/signaling", Rtc),
            ("/v1/realtime", Realtime),
            ("/", Other),
            ("/v1", Other),
            ("/v1/nope", Other),
            ("/v1/channels/c/nope", Other),
            ("/wp-admin/../../etc/passwd", Other),
        ];
        for (path, class) in cases {
            assert_eq!(RouteClass::of(path), class, "{path}");
        }
    }

    #[test]
    fn labels_follow_the_order_of_all() {
        for (i, class) in RouteClass::ALL.iter().enumerate() {
            assert_eq!(*class as usize, i);
            assert!(!class.label().is_empty());
        }
    }
}
