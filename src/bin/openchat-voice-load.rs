//! `openchat-voice-load`: voice load over real signaling and UDP against an openchatd started
//! with `OPENCHAT_AUTH_MODE=headers`. N publishers each send synthetic Opus (one 20 ms frame,
//! 50 packets/s, SRTP) into the first voice channel; M subscribers receive every publisher. It
//! reports forwarded RTP packets/s, loss, the server's CPU (with `--server-pid`), so packets/s
//! per busy core, and join latency (ticket request → first RTP packet on the subscriber).
//!
//! Publishers and subscribers are str0m peers (ICE, DTLS, SRTP) driven by one thread over
//! epoll. Once a subscriber's connection is up, RTP packets are counted from their clear
//! header (sequence numbers give loss) without decrypting them, so the load generator stays
//! cheaper than the server it loads. See docs/benchmarks.md.
//!
//! ```text
//! openchat-voice-load --addr 127.0.0.1:8080 --publishers 16 --subscribers 150 --duration 20
//!     [--server-pid PID] [--warmup 5] [--spin] [--video-kbps 500]
//! ```
//!
//! `--spin` polls the sockets without ever sleeping. On loopback the kernel delivers a datagram
//! inside the sender's `sendto`, so waking a sleeping receiver is charged to the server's CPU;
//! a load generator that never sleeps (on its own core) keeps that cost out of the server's
//! figure, as a real network would.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use openchatd::sfu::peer::{Line, Peer, media_time};
use simd_json::prelude::*;
use str0m::media::{MediaKind, Mid};
use tungstenite::{Message, WebSocket};

/// Receive buffer asked for each peer's socket.
const RECV_BUFFER_BYTES: usize = 2 * 1024 * 1024;

struct Args {
    addr: SocketAddr,
    publishers: usize,
    subscribers: usize,
    duration: Duration,
    warmup: Duration,
    server_pid: Option<u32>,
    /// Poll sockets without sleeping (see the module notes).
    spin: bool,
    /// Each publisher also sends a camera track at this bitrate (0: audio only).
    video_kbps: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:8080".parse().unwrap(),
        publishers: 8,
        subscribers: 50,
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(5),
        server_pid: None,
        spin: false,
        video_kbps: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        if argv[i] == "--spin" {
            args.spin = true;
            i += 1;
            continue;
        }
        let value = argv
            .get(i + 1)
            .ok_or(format!("{} needs a value", argv[i]))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{}: not a number", argv[i]))
        };
        match argv[i].as_str() {
            "--addr" => args.addr = value.parse().map_err(|_| "--addr: host:port")?,
            "--publishers" => args.publishers = number()? as usize,
            "--subscribers" => args.subscribers = number()? as usize,
            "--duration" => args.duration = Duration::from_secs(number()?),
            "--warmup" => args.warmup = Duration::from_secs(number()?),
            "--server-pid" => args.server_pid = Some(number()? as u32),
            "--video-kbps" => args.video_kbps = number()?,
            other => return Err(format!("unknown option {other}")),
        }
        i += 2;
    }
    if args.publishers == 0 || args.subscribers == 0 {
        return Err("--publishers and --subscribers must be at least 1".into());
    }
    Ok(args)
}

/// One HTTP/1.1 exchange on a fresh connection; (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    identity: Option<(&str, &str)>,
    body: &str,
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some((uid, device)) = identity {
        head.push_str(&format!(
            "X-OpenChat-User-UID: {uid}\r\nX-OpenChat-Device-ID: {device}\r\n"
        ));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP head")?;
    let status = std::str::from_utf8(&reply[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    Ok((status, reply[split + 4..].to_vec()))
}

fn json(mut body: Vec<u8>) -> Result<simd_json::OwnedValue, String> {
    simd_json::to_owned_value(&mut body).map_err(|e| e.to_string())
}

/// The default server and its first voice channel.
fn discover(addr: SocketAddr) -> Result<(String, String), String> {
    let (_, caps) = http(addr, "GET", "/v1/client/capabilities", None, "")?;
    let server = json(caps)?
        .get("server_id")
        .and_then(|s| s.as_str())
        .ok_or("capabilities without server_id")?
        .to_owned();
    // Channels as a member sees them (voice channels are not public).
    let (_, body) = http(
        addr,
        "GET",
        &format!("/v1/servers/{server}/channels"),
        Some(("uid_05ffffff", "desktop_05ffffff")),
        "",
    )?;
    let channels = json(body)?;
    for group in channels
        .get("groups")
        .and_then(|g| g.as_array())
        .into_iter()
        .flatten()
    {
        for c in group
            .get("channels")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
        {
            if c.get("type").and_then(|t| t.as_str()) == Some("voice") {
                let id = c.get("id").and_then(|i| i.as_str()).unwrap_or("");
                return Ok((server, id.to_owned()));
            }
        }
    }
    Err("the default server has no voice channel".into())
}

struct Conn {
    peer: Peer,
    socket: UdpSocket,
    /// Subscriber streams: ssrc → (first seq, highest extended seq, received).
    streams: HashMap<u32, (u64, u64, u64)>,
    first_packet: Option<Instant>,
    publish_mid: Option<Mid>,
    /// A publisher's camera m-line, and the keyframe requests already answered.
    video_mid: Option<Mid>,
    keyframes_answered: usize,
    subscriber: bool,
}

impl Conn {
    fn flush(&mut self) {
        for d in self.peer.take_datagrams() {
            let _ = self.socket.send_to(&d.contents, d.destination);
        }
    }
}

struct Participant {
    ws: WebSocket<TcpStream>,
    conn: usize,
    ticket_requested: Instant,
}

/// Joins one participant: ticket, signaling, offer; the answer is applied.
fn join(
    addr: SocketAddr,
    server: &str,
    channel: &str,
    index: usize,
    publisher: bool,
    slots: (usize, usize),
    conns: &mut Vec<Conn>,
) -> Result<Participant, String> {
    let uid = format!("uid_05{:06x}", index);
    let device = format!("desktop_05{:06x}", index);
    let ticket_requested = Instant::now();
    let (status, body) = http(
        addr,
        "POST",
        &format!("/v1/rtc/channels/{channel}/join-ticket"),
        Some((&uid, &device)),
        &format!("{{\"server_id\":\"{server}\"}}"),
    )?;
    if status != 200 {
        return Err(format!(
            "join-ticket: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let ticket = json(body)?
        .get("ticket")
        .and_then(|t| t.as_str())
        .ok_or("no ticket")?
        .to_owned();
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).ok();
    let (mut ws, _) =
        tungstenite::client::client(format!("ws://{addr}/v1/rtc/signaling").as_str(), stream)
            .map_err(|e| format!("signaling: {e}"))?;
    let send = |ws: &mut WebSocket<TcpStream>, text: String| {
        ws.send(Message::text(text)).map_err(|e| e.to_string())
    };
    send(
        &mut ws,
        format!(
            "{{\"type\":\"rtc.join\",\"request_id\":\"j\",\"payload\":{{\"ticket\":\"{ticket}\"}}}}"
        ),
    )?;
    wait_for(&mut ws, "rtc.joined")?;
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket.set_nonblocking(true).ok();
    // Room for bursts while the generator is busy joining others.
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER_BYTES);
    let mut peer = Peer::new(socket.local_addr().unwrap(), Instant::now());
    let direction = if publisher { "publish" } else { "subscribe" };
    let (audio_slots, video_slots) = slots;
    let lines: Vec<Line> = if publisher {
        let mut lines = vec![Line::send(
            MediaKind::Audio,
            &format!("s{index}"),
            &format!("mic{index}"),
        )];
        if video_slots > 0 {
            lines.push(Line::send(
                MediaKind::Video,
                &format!("s{index}"),
                &format!("cam{index}"),
            ));
        }
        lines
    } else {
        (0..audio_slots)
            .map(|_| Line::receive(MediaKind::Audio))
            .chain((0..video_slots).map(|_| Line::receive(MediaKind::Video)))
            .collect()
    };
    let (sdp, mids) = peer.offer(&lines).ok_or("nothing to offer")?;
    let offer = simd_json::json!({"type": format!("rtc.offer.{direction}"), "request_id": "o",
        "payload": {"type": "offer", "sdp": sdp, "direction": direction}});
    send(&mut ws, simd_json::to_string(&offer).unwrap())?;
    let answer = wait_for(&mut ws, &format!("rtc.answer.{direction}"))?;
    let sdp = answer
        .get("payload")
        .and_then(|p| p.get("sdp"))
        .and_then(|s| s.as_str())
        .ok_or("answer without sdp")?;
    peer.accept_answer(sdp)?;
    ws.get_ref().set_nonblocking(true).ok();
    conns.push(Conn {
        peer,
        socket,
        streams: HashMap::new(),
        first_packet: None,
        publish_mid: publisher.then(|| mids[0]),
        video_mid: (publisher && video_slots > 0).then(|| mids[1]),
        keyframes_answered: 0,
        subscriber: !publisher,
    });
    Ok(Participant {
        ws,
        conn: conns.len() - 1,
        ticket_requested,
    })
}

fn wait_for(ws: &mut WebSocket<TcpStream>, kind: &str) -> Result<simd_json::OwnedValue, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let frame = json(text.as_bytes().to_vec())?;
                match frame.get("type").and_then(|t| t.as_str()) {
                    Some(t) if t == kind => return Ok(frame),
                    Some("rtc.error") => return Err(format!("rtc.error: {text}")),
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(e) => return Err(format!("signaling closed: {e}")),
        }
    }
    Err(format!("no {kind} within 10 s"))
}

/// An SRTP packet (RTP, not RTCP) from its clear header: (ssrc, sequence number).
fn rtp_header(buf: &[u8]) -> Option<(u32, u16)> {
    if buf.len() < 12 || buf[0] >> 6 != 2 || (72..=76).contains(&(buf[1] & 0x7f)) {
        return None;
    }
    let seq = u16::from_be_bytes([buf[2], buf[3]]);
    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    Some((ssrc, seq))
}

/// (user + system) CPU seconds of a process.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Readiness of every connection's socket, by index into the connection list.
struct Epoll(nix::sys::epoll::Epoll);

impl Epoll {
    fn new(conns: &[Conn]) -> Epoll {
        use nix::sys::epoll::{EpollCreateFlags, EpollEvent, EpollFlags};
        let epoll = nix::sys::epoll::Epoll::new(EpollCreateFlags::empty()).expect("epoll_create1");
        for (i, c) in conns.iter().enumerate() {
            epoll
                .add(&c.socket, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                .expect("epoll_ctl");
        }
        Epoll(epoll)
    }

    fn wait(&self, out: &mut Vec<usize>, timeout_ms: i32) {
        let mut events = [nix::sys::epoll::EpollEvent::empty(); 256];
        // An interrupted wait reports nothing ready; the caller's loop comes back.
        let n = self.0.wait(&mut events, timeout_ms as isize).unwrap_or(0);
        out.clear();
        out.extend(events[..n].iter().map(|e| e.data() as usize));
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("openchat-voice-load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("openchat-voice-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let (server, channel) = discover(args.addr)?;
    let mut conns: Vec<Conn> = Vec::new();
    let mut people: Vec<Participant> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut ready = Vec::new();
    // Publishers first; their media flows while subscribers join, as in a live call.
    for i in 0..args.publishers {
        let video = usize::from(args.video_kbps > 0);
        people.push(join(
            args.addr,
            &server,
            &channel,
            i,
            true,
            (0, video),
            &mut conns,
        )?);
    }
    // One receive slot per publisher, within the default receive caps (16 audio, 8 video).
    let slots = (
        args.publishers.min(16),
        if args.video_kbps > 0 {
            args.publishers.min(8)
        } else {
            0
        },
    );
    // Video: 25 frames/s (every other audio tick) of the size that makes the bitrate.
    let video_frame_bytes = (args.video_kbps * 1000 / 8 / 25) as usize;
    let mut sent = 0u64;
    let start = Instant::now();
    let mut next_frame = start;
    let mut frame_no = 0u64;
    let mut subscribers_joined = 0;
    let mut epoll = Epoll::new(&conns);
    let mut last_ws_poll = start;
    let mut window: Option<(Instant, u64, Option<f64>, Option<f64>)> = None;
    let mut window_end = None;
    loop {
        let now = Instant::now();
        // Join subscribers one at a time between media rounds.
        if subscribers_joined < args.subscribers {
            let index = args.publishers + subscribers_joined;
            people.push(join(
                args.addr, &server, &channel, index, false, slots, &mut conns,
            )?);
            subscribers_joined += 1;
            if !args.spin {
                epoll = Epoll::new(&conns);
            }
            if subscribers_joined == args.subscribers {
                eprintln!(
                    "all {} participants joined in {:.1}s",
                    people.len(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        // Publishers send one Opus frame each every 20 ms.
        if now >= next_frame {
            next_frame += Duration::from_millis(20);
            for c in conns.iter_mut() {
                if let Some(mid) = c.publish_mid
                    && c.peer.connected
                {
                    let frame = [0x78u8; 80];
                    c.peer.write(
                        mid,
                        now,
                        media_time(MediaKind::Audio, frame_no, 960),
                        &frame,
                        None,
                        None,
                    );
                    sent += 1;
                    if let Some(video) = c.video_mid
                        && frame_no.is_multiple_of(2)
                    {
                        // A keyframe first, every 50 frames, and when the SFU asks.
                        let asked = c.peer.keyframe_requests > c.keyframes_answered;
                        c.keyframes_answered = c.peer.keyframe_requests;
                        let key = frame_no.is_multiple_of(100) || asked;
                        let mut data = vec![0x5au8; video_frame_bytes.max(16)];
                        data[0] = if key { 0 } else { 1 };
                        c.peer.write(
                            video,
                            now,
                            media_time(MediaKind::Video, frame_no / 2, 3600),
                            &data,
                            None,
                            None,
                        );
                        sent += 1;
                    }
                    c.flush();
                }
            }
            frame_no += 1;
        }
        let wait = next_frame
            .saturating_duration_since(Instant::now())
            .as_millis() as i32;
        if args.spin {
            // Every socket, without epoll: no wait queue for the kernel to wake.
            ready.clear();
            ready.extend(0..conns.len());
        } else {
            epoll.wait(&mut ready, wait.min(5));
        }
        let now = Instant::now();
        for &i in &ready {
            let c = &mut conns[i];
            while let Ok((n, from)) = c.socket.recv_from(&mut buf) {
                if c.subscriber
                    && c.peer.connected
                    && let Some((ssrc, seq)) = rtp_header(&buf[..n])
                {
                    c.first_packet.get_or_insert(now);
                    let entry = c.streams.entry(ssrc).or_insert((seq as u64, seq as u64, 0));
                    // Extend the 16-bit sequence number near the highest seen.
                    let high = entry.1;
                    let mut ext = (high & !0xffff) | seq as u64;
                    if ext + 0x8000 < high {
                        ext += 0x10000;
                    } else if ext > high + 0x8000 && ext >= 0x10000 {
                        ext -= 0x10000;
                    }
                    entry.1 = entry.1.max(ext);
                    entry.2 += 1;
                    continue;
                }
                c.peer.handle_datagram(now, from, &buf[..n]);
            }
            c.flush();
        }
        for c in conns.iter_mut() {
            if c.peer.timeout <= now {
                c.peer.handle_timeout(now);
                c.flush();
            }
        }
        // Keep signaling alive (pongs) once a second.
        if now.duration_since(last_ws_poll) >= Duration::from_secs(1) {
            last_ws_poll = now;
            for p in &mut people {
                while p.ws.read().is_ok() {}
                let _ = p.ws.flush();
            }
        }
        let received: u64 = conns
            .iter()
            .flat_map(|c| c.streams.values())
            .map(|s| s.2)
            .sum();
        let all_in = subscribers_joined == args.subscribers;
        match (&window, all_in) {
            (None, true) if window_end.is_none() => {
                window_end = Some(now + args.warmup);
                eprintln!("warming up for {:?}", args.warmup);
            }
            (None, true) if window_end.is_some_and(|w| now >= w) => {
                let pid = args.server_pid.map(|p| p.to_string());
                window = Some((
                    now,
                    received,
                    pid.as_deref().and_then(cpu_seconds),
                    cpu_seconds("self"),
                ));
                window_end = Some(now + args.duration);
                eprintln!("measuring for {:?}", args.duration);
            }
            (Some((t0, r0, s0, l0)), _) if window_end.is_some_and(|w| now >= w) => {
                let secs = now.duration_since(*t0).as_secs_f64();
                let rate = (received - r0) as f64 / secs;
                let pid = args.server_pid.map(|p| p.to_string());
                let server_cpu = match (s0, pid.as_deref().and_then(cpu_seconds)) {
                    (Some(a), Some(b)) => Some((b - a) / secs),
                    _ => None,
                };
                let load_cpu = match (l0, cpu_seconds("self")) {
                    (Some(a), Some(b)) => Some((b - a) / secs),
                    _ => None,
                };
                report(args, &conns, &people, rate, server_cpu, load_cpu, sent);
                return Ok(());
            }
            _ => {}
        }
    }
}

fn report(
    args: &Args,
    conns: &[Conn],
    people: &[Participant],
    rate: f64,
    server_cpu: Option<f64>,
    load_cpu: Option<f64>,
    sent: u64,
) {
    let (mut expected, mut received) = (0u64, 0u64);
    for s in conns.iter().flat_map(|c| c.streams.values()) {
        expected += s.1 - s.0 + 1;
        received += s.2;
    }
    let loss = if expected == 0 {
        1.0
    } else {
        1.0 - received as f64 / expected as f64
    };
    let mut joins: Vec<f64> = people
        .iter()
        .filter(|p| conns[p.conn].subscriber)
        .filter_map(|p| {
            conns[p.conn]
                .first_packet
                .map(|t| t.duration_since(p.ticket_requested).as_secs_f64() * 1000.0)
        })
        .collect();
    joins.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| {
        joins
            .get(((joins.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let per_core = server_cpu.map(|c| rate / c.max(0.01));
    println!(
        "voice: {} publishers x {} subscribers, {} s measured",
        args.publishers,
        args.subscribers,
        args.duration.as_secs()
    );
    println!("  forwarded RTP packets/s (received by subscribers): {rate:.0}");
    println!(
        "  loss: {:.4}% ({} of {} expected packets missing); frames sent by publishers: {sent}",
        loss * 100.0,
        expected.saturating_sub(received),
        expected
    );
    if let (Some(cpu), Some(per_core)) = (server_cpu, per_core) {
        println!(
            "  server CPU: {:.2} cores busy -> {per_core:.0} packets/s per busy core",
            cpu
        );
    }
    if let Some(cpu) = load_cpu {
        println!("  load generator CPU: {cpu:.2} cores");
    }
    println!(
        "  join (ticket request -> first RTP packet), {} subscribers: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        joins.len(),
        pct(0.5),
        pct(0.9),
        pct(1.0)
    );
    println!(
        "{{\"mode\":\"voice\",\"publishers\":{},\"subscribers\":{},\"forwarded_per_s\":{rate:.0},\"loss\":{loss:.6},\"server_cores\":{},\"per_core\":{},\"join_p50_ms\":{:.1},\"join_p90_ms\":{:.1}}}",
        args.publishers,
        args.subscribers,
        server_cpu
            .map(|c| format!("{c:.3}"))
            .unwrap_or("null".into()),
        per_core.map(|c| format!("{c:.0}")).unwrap_or("null".into()),
        pct(0.5),
        pct(0.9)
    );
}
