//! Value parsers shared by the variables. Each turns one raw string into a typed value or a
//! [`ConfigError`] that says what would have been accepted; none of them knows defaults or other
//! variables, which keeps cross-variable rules visible in `mod.rs` and `rtc.rs`.

use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use super::{ConfigError, VarSpec};

/// Longest slice of a rejected value echoed back; enough to spot the mistake, short enough to
/// keep the error on one readable line.
const ECHO_MAX_CHARS: usize = 80;

/// Debug-quotes `raw` (escaping newlines and control characters) and cuts it if long.
pub(super) fn quoted(raw: &str) -> String {
    if raw.chars().count() > ECHO_MAX_CHARS {
        let head: String = raw.chars().take(ECHO_MAX_CHARS).collect();
        format!("{head:?}…")
    } else {
        format!("{raw:?}")
    }
}

/// An integer in `min..=max`; surrounding spaces are tolerated.
pub(super) fn integer<T>(var: &VarSpec, raw: &str, min: T, max: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    match raw.trim().parse::<T>() {
        Ok(value) if value >= min && value <= max => Ok(value),
        _ => Err(ConfigError::invalid(
            var,
            raw,
            &format!("expected an integer from {min} to {max}"),
        )),
    }
}

pub(super) fn boolean(var: &VarSpec, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::invalid(
            var,
            raw,
            "expected true, false, 1, 0, yes or no",
        )),
    }
}

/// One of a fixed set of words, case-insensitive.
pub(super) fn keyword<T: Copy>(
    var: &VarSpec,
    raw: &str,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let word = raw.trim();
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(word))
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            let expected = match names.split_last() {
                Some((last, [])) => (*last).to_owned(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            ConfigError::invalid(var, raw, &format!("expected {expected}"))
        })
}

/// `:port` (all IPv4 interfaces, as Go servers write it), `ip:port`, `[ipv6]:port` or
/// `localhost:port`. Host names are not resolved: start-up must not depend on DNS.
pub(super) fn listen_addr(var: &VarSpec, raw: &str) -> Result<SocketAddr, ConfigError> {
    let text = raw.trim();
    let parsed = if let Some(port) = text.strip_prefix(':') {
        port.parse::<u16>()
            .ok()
            .map(|port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    } else if let Some(port) = text.strip_prefix("localhost:") {
        port.parse::<u16>()
            .ok()
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    } else {
        text.parse::<SocketAddr>().ok()
    };
    parsed.ok_or_else(|| {
        ConfigError::invalid(
            var,
            raw,
            "expected :port or host:port with an IP address or localhost as host, \
             e.g. :8080, 127.0.0.1:8080 or [::]:8080",
        )
    })
}

/// An absolute `http://` or `https://` URL without query, fragment or user info; trailing
/// slashes are removed because the result is compared byte for byte as a signed origin.
pub(super) fn base_url(var: &VarSpec, raw: &str) -> Result<String, ConfigError> {
    const EXPECTED: &str = "expected an absolute http:// or https:// URL without query or fragment, e.g. https://chat.example.com";
    let invalid = || ConfigError::invalid(var, raw, EXPECTED);
    let text = raw.trim();
    let rest = strip_prefix_ignore_case(text, "https://")
        .or_else(|| strip_prefix_ignore_case(text, "http://"))
        .ok_or_else(invalid)?;
    if text.contains(['?', '#', '@']) || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if !valid_authority(authority) {
        return Err(invalid());
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// `host`, `host:port`, `[ipv6]` or `[ipv6]:port` with a plausible host and a numeric port.
fn valid_authority(authority: &str) -> bool {
    let (host_ok, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((ip, after)) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), after),
            None => return false,
        }
    } else {
        let (host, port) = match authority.find(':') {
            Some(at) => authority.split_at(at),
            None => (authority, ""),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        (host_ok, port)
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok());
    host_ok && port_ok
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// A PostgreSQL URL, checked only by scheme (the driver owns the rest of the syntax). The value
/// is never echoed: it usually carries a password.
pub(super) fn postgres_url(var: &VarSpec, raw: &str) -> Result<String, ConfigError> {
    let text = raw.trim();
    let has_scheme = ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| strip_prefix_ignore_case(text, scheme).is_some_and(|rest| !rest.is_empty()));
    if has_scheme && !text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(text.to_owned())
    } else {
        Err(ConfigError::invalid_secret(
            var,
            "expected a postgres:// or postgresql:// URL (leave unset for the embedded SQLite database)",
        ))
    }
}

/// One or more comma-separated NATS server URLs, `nats://` or `tls://`, each
/// `[user[:password]@]host[:port]` without path, query or fragment. Kept as written (trimmed);
/// never echoed, because a URL may carry a password.
pub(super) fn nats_urls(var: &VarSpec, raw: &str) -> Result<Vec<String>, ConfigError> {
    const EXPECTED: &str = "expected nats://host:port or tls://host:port (several separated by commas), e.g. nats://127.0.0.1:4222";
    let mut urls = Vec::new();
    for entry in raw
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let rest = strip_prefix_ignore_case(entry, "nats://")
            .or_else(|| strip_prefix_ignore_case(entry, "tls://"))
            .ok_or_else(|| ConfigError::invalid_secret(var, EXPECTED))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // The password may contain what a host may not; only the part after the last `@` is
        // the authority.
        let authority = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let clean = !entry.chars().any(|c| c.is_whitespace() || c.is_control());
        if !clean || authority.contains(['/', '?', '#']) || !valid_authority(authority) {
            return Err(ConfigError::invalid_secret(var, EXPECTED));
        }
        urls.push(entry.to_owned());
    }
    if urls.is_empty() {
        return Err(ConfigError::invalid_secret(var, EXPECTED));
    }
    Ok(urls)
}

/// `url` with its secrets replaced by `***`, for logs and `Debug` (the one redaction of
/// database URLs: configuration, storage and tests use it). The password in the userinfo
/// (`postgres://user:secret@host/db`) and the value of every query parameter whose name
/// speaks of a secret (`password`, `sslpassword`, `secret`, `token`, `key`) are hidden; the
/// rest (host, database, `sslmode`, …) stays readable.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if names_a_secret(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

fn names_a_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token", "key"]
        .iter()
        .any(|word| name.contains(word))
}

/// An Ed25519 public key, base64url of 32 bytes (padded or not); kept in its unpadded spelling.
pub(super) fn public_key(var: &VarSpec, raw: &str) -> Result<String, ConfigError> {
    crate::auth::decode_public_key(raw.trim())
        .map(|key| crate::auth::encode_public_key(&key))
        .map_err(|e| {
            ConfigError::invalid(
                var,
                raw,
                &format!("expected an Ed25519 public key, base64url of 32 bytes ({e})"),
            )
        })
}

/// An id as used in URLs and storage keys: 1 to 64 of `[A-Za-z0-9_-]`.
pub(super) fn identifier(var: &VarSpec, raw: &str) -> Result<String, ConfigError> {
    let text = raw.trim();
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(ConfigError::invalid(
            var,
            raw,
            "expected 1 to 64 characters of A-Z, a-z, 0-9, _ and -",
        ))
    }
}

/// Human-readable text of 1 to `max_chars` characters after trimming, without control characters.
pub(super) fn display_name(
    var: &VarSpec,
    raw: &str,
    max_chars: usize,
) -> Result<String, ConfigError> {
    let text = raw.trim();
    let count = text.chars().count();
    if (1..=max_chars).contains(&count) && !text.chars().any(char::is_control) {
        Ok(text.to_owned())
    } else {
        Err(ConfigError::invalid(
            var,
            raw,
            &format!(
                "expected 1 to {max_chars} characters after trimming, without control characters"
            ),
        ))
    }
}

/// Only checked for being non-blank here; the logging set-up parses the directive syntax, and a
/// config module that pulled in the filter parser would stop being dependency-light.
pub(super) fn log_filter(var: &VarSpec, raw: &str) -> Result<String, ConfigError> {
    let text = raw.trim();
    if text.is_empty() {
        Err(ConfigError::invalid(
            var,
            raw,
            "expected a tracing filter directive such as info or openchatd=debug,info",
        ))
    } else {
        Ok(text.to_owned())
    }
}

/// Comma-separated URLs whose scheme is one of `schemes` (each given with its colon). Spaces
/// around entries and empty entries are dropped, so `a, b,` is fine. `expected` completes the
/// error message.
pub(super) fn url_list(
    var: &VarSpec,
    raw: &str,
    schemes: &[&str],
    expected: &str,
) -> Result<Vec<String>, ConfigError> {
    let mut urls = Vec::new();
    for entry in raw
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let valid = schemes.iter().any(|scheme| {
            strip_prefix_ignore_case(entry, scheme).is_some_and(|rest| !rest.is_empty())
        }) && !entry.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            return Err(ConfigError::new(
                var.name,
                format!("invalid URL {}: {expected}", quoted(entry)),
            ));
        }
        urls.push(entry.to_owned());
    }
    Ok(urls)
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn redacts_secret_query_parameters_and_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://db/openchat?sslmode=verify-full&sslpassword=k&sslkey=/k.pem"),
            "postgres://db/openchat?sslmode=verify-full&sslpassword=***&sslkey=***"
        );
    }

    #[test]
    fn redacts_password_in_userinfo() {
        assert_eq!(
            redact_url("postgres://chat:s3cr%40t@db.example:5432/openchat"),
            "postgres://chat:***@db.example:5432/openchat"
        );
    }

    #[test]
    fn redacts_password_query_parameter() {
        assert_eq!(
            redact_url("postgresql://chat@db/openchat?sslmode=require&password=hunter2"),
            "postgresql://chat@db/openchat?sslmode=require&password=***"
        );
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(redact_url(url), url);
        assert_eq!(redact_url("postgres://localhost"), "postgres://localhost");
    }

    #[test]
    fn password_containing_at_sign_does_not_leak() {
        // Unencoded '@' is invalid in a URL, but must still not leak if someone writes it.
        let redacted = redact_url("postgres://chat:p@ss@db/openchat");
        assert!(!redacted.contains("p@ss"), "{redacted}");
    }
}
