//! Command line: `openchat-load <send|fanout|idle> [--option value | --option=value]...`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

pub const USAGE: &str = "\
openchat-load: load generator for openchatd (server started with OPENCHAT_AUTH_MODE=headers)

usage:
  openchat-load send   --url http://127.0.0.1:8080 --connections 64 --duration 10s [--channel ID] [--users N]
  openchat-load fanout --url http://127.0.0.1:8080 --subscribers 1000 --rate 200 --duration 20s [--senders 4]
                       [--channel ID] [--drain 5s]
  openchat-load idle   --url http://127.0.0.1:8080 --sockets 10000 --hold 30s [--server-pid PID] [--settle 5s]

options for every mode:
  --url URL                 http://host:port of the server (default http://127.0.0.1:8080)
  --threads N               client runtime threads (default: available cores)
  --source-ips N            spread connections over 127.0.0.1..127.0.0.N (default: as many as
                            the ephemeral port range needs, loopback targets only)
  --connect-concurrency N   handshakes in flight while opening sockets (default 256)
  --timeout DURATION        per-request and per-handshake timeout (default 10s)

Durations: 10s, 500ms, 2m or plain seconds. Each run prints a summary, then one JSON line.
Exit status 1 when the run saw failures (missing frames, failed sockets, no committed message).
";

/// Where the server is: `http://host[:port]` only (the load generator speaks plain HTTP/1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host[:port]` as written, for the `Host` header.
    pub authority: String,
    pub host: String,
    pub port: u16,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url {text:?}: only http:// URLs are supported"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "--url {text:?}: give the origin only, e.g. http://127.0.0.1:8080"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("--url {text:?}: unclosed IPv6 bracket"))?;
            match after {
                "" => (host.to_string(), 80),
                p => (host.to_string(), parse_port(p.strip_prefix(':'), text)?),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), parse_port(Some(port), text)?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() {
            return Err(format!("--url {text:?}: no host"));
        }
        Ok(Url {
            authority: authority.to_string(),
            host,
            port,
        })
    }

    pub fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", self.host))
    }
}

fn parse_port(port: Option<&str>, url: &str) -> Result<u16, String> {
    port.and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("--url {url:?}: bad port"))
}

/// `10s`, `250ms`, `2m`, `1.5s`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {text:?} (expected e.g. 10s, 500ms, 2m)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("bad duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub url: Url,
    pub threads: usize,
    pub source_ips: Option<usize>,
    pub connect_concurrency: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SendArgs {
    pub common: Common,
    pub connections: usize,
    pub duration: Duration,
    pub channel: Option<String>,
    /// Distinct uids; connection `i` posts as user `i % users`.
    pub users: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FanoutArgs {
    pub common: Common,
    pub subscribers: usize,
    /// Messages per second, all senders together.
    pub rate: f64,
    pub duration: Duration,
    pub senders: usize,
    pub channel: Option<String>,
    /// How long to wait after the last send for frames still in flight.
    pub drain: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdleArgs {
    pub common: Common,
    pub sockets: usize,
    pub hold: Duration,
    pub server_pid: Option<u32>,
    /// Wait after the last socket opened before reading the server's memory.
    pub settle: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Send(SendArgs),
    Fanout(FanoutArgs),
    Idle(IdleArgs),
    Help,
}

/// The `--name value` pairs of one command line, taken out one by one so leftovers can be
/// reported as unknown.
struct Options {
    mode: &'static str,
    values: BTreeMap<String, String>,
}

impl Options {
    fn collect(mode: &'static str, args: &[String]) -> Result<Options, String> {
        let mut values = BTreeMap::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("{mode}: unexpected argument {arg:?}"));
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let value = it
                        .next()
                        .ok_or_else(|| format!("{mode}: --{name} needs a value"))?;
                    (name.to_string(), value.clone())
                }
            };
            if values.insert(name.clone(), value).is_some() {
                return Err(format!("{mode}: --{name} given twice"));
            }
        }
        Ok(Options { mode, values })
    }

    fn text(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    fn parsed<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String> {
        match self.values.remove(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{}: --{name} {v:?} is not valid", self.mode)),
        }
    }

    fn count(&mut self, name: &str, default: usize) -> Result<usize, String> {
        let value = self.parsed::<usize>(name)?.unwrap_or(default);
        if value == 0 {
            return Err(format!("{}: --{name} must be at least 1", self.mode));
        }
        Ok(value)
    }

    fn duration(&mut self, name: &str, default: Duration) -> Result<Duration, String> {
        match self.values.remove(name) {
            None => Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| format!("{}: --{name}: {e}", self.mode)),
        }
    }

    fn common(&mut self) -> Result<Common, String> {
        let url = Url::parse(
            &self
                .text("url")
                .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
        )?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let source_ips = self.parsed::<usize>("source-ips")?;
        if matches!(source_ips, Some(0 | 255..)) {
            return Err(format!("{}: --source-ips must be 1..=254", self.mode));
        }
        Ok(Common {
            url,
            threads: self.count("threads", cores)?,
            source_ips,
            connect_concurrency: self.count("connect-concurrency", 256)?,
            timeout: self.duration("timeout", Duration::from_secs(10))?,
        })
    }

    fn finish(self) -> Result<(), String> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(name) => Err(format!(
                "{}: unknown option --{name} (see openchat-load --help)",
                self.mode
            )),
        }
    }
}

fn positive_duration(mode: &str, name: &str, d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!("{mode}: --{name} must be more than 0"))
    } else {
        Ok(d)
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some(mode) = args.first() else {
        return Ok(Command::Help);
    };
    let rest = &args[1..];
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    match mode.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "send" => {
            let mut o = Options::collect("send", rest)?;
            let common = o.common()?;
            let connections = o.count("connections", 64)?;
            let args = SendArgs {
                common,
                connections,
                duration: positive_duration(
                    "send",
                    "duration",
                    o.duration("duration", Duration::from_secs(10))?,
                )?,
                channel: o.text("channel"),
                users: o.count("users", connections)?,
            };
            o.finish()?;
            Ok(Command::Send(args))
        }
        "fanout" => {
            let mut o = Options::collect("fanout", rest)?;
            let common = o.common()?;
            let rate = o.parsed::<f64>("rate")?.unwrap_or(200.0);
            if !(rate.is_finite() && rate > 0.0) {
                return Err(
                    "fanout: --rate must be a positive number of messages per second".into(),
                );
            }
            let args = FanoutArgs {
                common,
                subscribers: o.count("subscribers", 1000)?,
                rate,
                duration: positive_duration(
                    "fanout",
                    "duration",
                    o.duration("duration", Duration::from_secs(20))?,
                )?,
                senders: o.count("senders", 4)?,
                channel: o.text("channel"),
                drain: o.duration("drain", Duration::from_secs(5))?,
            };
            o.finish()?;
            if (args.rate * args.duration.as_secs_f64()) < 1.0 {
                return Err("fanout: --rate × --duration sends no message".into());
            }
            Ok(Command::Fanout(args))
        }
        "idle" => {
            let mut o = Options::collect("idle", rest)?;
            let args = IdleArgs {
                common: o.common()?,
                sockets: o.count("sockets", 10_000)?,
                hold: o.duration("hold", Duration::from_secs(30))?,
                server_pid: o.parsed::<u32>("server-pid")?,
                settle: o.duration("settle", Duration::from_secs(5))?,
            };
            o.finish()?;
            Ok(Command::Idle(args))
        }
        other => Err(format!(
            "unknown mode {other:?}: expected send, fanout or idle (see openchat-load --help)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8080));
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(Url::parse("http://localhost/").unwrap().port, 80);
        let v6 = Url::parse("http://[::1]:9000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert_eq!(v6.authority, "[::1]:9000");
        assert!(Url::parse("https://example.org").is_err());
        assert!(Url::parse("http://example.org/v1").is_err());
        assert!(Url::parse("http://host:0").is_err());
        assert!(Url::parse("http://host:99999").is_err());
        assert!(Url::parse("http://").is_err());
        assert_eq!(
            Url::parse("http://127.0.0.1:8080")
                .unwrap()
                .resolve()
                .unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
    }

    #[test]
    fn send_with_defaults_and_overrides() {
        let Command::Send(s) = parse(&argv(
            "send --url http://127.0.0.1:9000 --connections 8 --duration=3s --channel ch_1",
        ))
        .unwrap() else {
            panic!("not send")
        };
        assert_eq!(s.connections, 8);
        assert_eq!(s.users, 8, "one uid per connection by default");
        assert_eq!(s.duration, Duration::from_secs(3));
        assert_eq!(s.channel.as_deref(), Some("ch_1"));
        assert_eq!(s.common.url.port, 9000);
        assert_eq!(s.common.connect_concurrency, 256);
        assert_eq!(s.common.timeout, Duration::from_secs(10));

        let Command::Send(s) = parse(&argv("send --users 2")).unwrap() else {
            panic!("not send")
        };
        assert_eq!((s.connections, s.users), (64, 2));
        assert_eq!(s.common.url.authority, "127.0.0.1:8080");
    }

    #[test]
    fn fanout_and_idle() {
        let Command::Fanout(f) = parse(&argv(
            "fanout --url http://127.0.0.1:8080 --subscribers 1000 --rate 200 --duration 20s --senders 4",
        ))
        .unwrap() else {
            panic!("not fanout")
        };
        assert_eq!((f.subscribers, f.senders), (1000, 4));
        assert_eq!(f.rate, 200.0);
        assert_eq!(f.duration, Duration::from_secs(20));
        assert_eq!(f.drain, Duration::from_secs(5));
        assert_eq!(f.channel, None);

        let Command::Idle(i) = parse(&argv(
            "idle --url http://127.0.0.1:8080 --sockets 10000 --hold 30s --server-pid 4242 --source-ips 3",
        ))
        .unwrap() else {
            panic!("not idle")
        };
        assert_eq!((i.sockets, i.server_pid), (10_000, Some(4242)));
        assert_eq!(i.hold, Duration::from_secs(30));
        assert_eq!(i.settle, Duration::from_secs(5));
        assert_eq!(i.common.source_ips, Some(3));
    }

    #[test]
    fn rejects_bad_command_lines() {
        for line in [
            "blast",
            "send --connections 0",
            "send --connections many",
            "send --duration 0s",
            "send --bogus 1",
            "send --connections 2 --connections 3",
            "send --connections",
            "send stray",
            "fanout --rate 0",
            "fanout --rate 0.1 --duration 1s",
            "idle --server-pid me",
            "idle --source-ips 300",
        ] {
            assert!(parse(&argv(line)).is_err(), "{line} should be rejected");
        }
        assert_eq!(parse(&[]).unwrap(), Command::Help);
        assert_eq!(parse(&argv("send --help")).unwrap(), Command::Help);
    }
}
