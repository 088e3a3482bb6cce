//! Connection timeouts without a timer per read. Arming a glommio timer on every read costs an
//! io_uring timeout and a cancel per request, measurable on `/healthz` throughput. Instead each
//! connection owns a [`Watch`] holding its current deadline (a `Cell` write per read), and one
//! sweeper per shard looks at all of them every [`SWEEP_INTERVAL`]. An expired connection's
//! read side is shut down (`shutdown(fd, SHUT_RD)`), which completes its pending read with
//! end-of-file; the driver then asks the watch why and answers 408 or closes. Shutdown uses the
//! same path for idle keep-alive connections. [`RequestClock`] says which deadline the next
//! read of an HTTP request gets.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::http::limits::{BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT, IDLE_KEEPALIVE_TIMEOUT};

/// How often the sweeper looks at deadlines: timeouts fire up to this much late.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// The connection's deadline passed.
    TimedOut,
    /// The shard is stopping and the connection was idle.
    Stopping,
}

pub struct Watch {
    fd: RawFd,
    deadline: Cell<Option<Instant>>,
    idle: Cell<bool>,
    fired: Cell<Option<Fired>>,
}

impl Watch {
    /// Sets the deadline of the read about to start; `idle` means between requests (such a
    /// connection is closed at once when the shard stops).
    pub fn arm(&self, deadline: Instant, idle: bool) {
        self.deadline.set(Some(deadline));
        self.idle.set(idle);
    }

    /// No read in progress: nothing to time out.
    pub fn disarm(&self) {
        self.deadline.set(None);
        self.idle.set(false);
    }

    /// Why the read side was shut down, if the watchdog did it.
    pub fn fired(&self) -> Option<Fired> {
        self.fired.get()
    }

    fn fire(&self, why: Fired) {
        if self.fired.get().is_none() {
            self.fired.set(Some(why));
            // `fd` belongs to a connection that is still alive (we hold a strong reference
            // obtained from its Weak, and the connection drops its Watch only after the socket
            // is closed; see `Watchdog::sweep`), so this cannot reach a reused descriptor. A
            // failure (the peer already gone) leaves nothing to wake.
            let _ = nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Read);
        }
    }
}

/// Where a connection is in its current request, for choosing the deadline of the next read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests: the keep-alive timeout applies.
    Idle,
    /// Part of a head has arrived.
    Head,
    /// The head is complete; its body is awaited.
    Body,
}

/// The deadlines of one request, as the HTTP limits document them:
/// [`HEADER_READ_TIMEOUT`] from the first byte of a request to the end of its head, however
/// steadily the head trickles in, and [`BODY_READ_TIMEOUT`] from the end of the head to the end
/// of the body, with no read waiting longer than [`HEADER_READ_TIMEOUT`] for progress. The same
/// clock serves every request of a keep-alive connection ([`RequestClock::finished`] between
/// them). The time is an input, so this is tested without sockets.
#[derive(Debug, Default)]
pub struct RequestClock {
    head_since: Option<Instant>,
    body_since: Option<Instant>,
}

impl RequestClock {
    /// The deadline of the read about to start in `phase` at `now`.
    pub fn deadline(&mut self, phase: Phase, now: Instant) -> Instant {
        match phase {
            Phase::Idle => {
                self.finished();
                now + IDLE_KEEPALIVE_TIMEOUT
            }
            Phase::Head => *self.head_since.get_or_insert(now) + HEADER_READ_TIMEOUT,
            Phase::Body => {
                let since = *self.body_since.get_or_insert(now);
                (since + BODY_READ_TIMEOUT).min(now + HEADER_READ_TIMEOUT)
            }
        }
    }

    /// A request was read completely: the next one starts its own clock.
    pub fn finished(&mut self) {
        self.head_since = None;
        self.body_since = None;
    }
}

#[derive(Default)]
pub struct Watchdog {
    watches: RefCell<Vec<Weak<Watch>>>,
}

impl Watchdog {
    /// Registers a connection. The returned watch must be dropped before the socket is closed,
    /// so the sweeper never shuts down a descriptor number that has been reused.
    pub fn watch(&self, fd: RawFd) -> Rc<Watch> {
        let watch = Rc::new(Watch {
            fd,
            deadline: Cell::new(None),
            idle: Cell::new(false),
            fired: Cell::new(None),
        });
        self.watches.borrow_mut().push(Rc::downgrade(&watch));
        watch
    }

    /// Fires every expired watch (and, when `stopping`, every idle one); forgets dropped ones.
    pub fn sweep(&self, now: Instant, stopping: bool) {
        self.watches.borrow_mut().retain(|weak| {
            let Some(watch) = weak.upgrade() else {
                return false;
            };
            if watch.deadline.get().is_some_and(|d| d <= now) {
                watch.fire(Fired::TimedOut);
            } else if stopping && watch.idle.get() {
                watch.fire(Fired::Stopping);
            }
            true
        });
    }

    pub fn len(&self) -> usize {
        self.watches.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn an_expired_read_ends_with_eof_and_says_why() {
        let (_client, mut server) = pair();
        let dog = Watchdog::default();
        let watch = dog.watch(server.as_raw_fd());
        let now = Instant::now();
        watch.arm(now + Duration::from_secs(1), false);
        dog.sweep(now, false);
        assert_eq!(watch.fired(), None, "not yet due");
        dog.sweep(now + Duration::from_secs(2), false);
        assert_eq!(watch.fired(), Some(Fired::TimedOut));
        let mut buf = [0u8; 8];
        assert_eq!(
            server.read(&mut buf).unwrap(),
            0,
            "a blocked read returns EOF"
        );
    }

    #[test]
    fn stopping_closes_idle_connections_only() {
        let (_c1, idle) = pair();
        let (_c2, busy) = pair();
        let dog = Watchdog::default();
        let now = Instant::now();
        let w_idle = dog.watch(idle.as_raw_fd());
        let w_busy = dog.watch(busy.as_raw_fd());
        w_idle.arm(now + Duration::from_secs(30), true);
        w_busy.arm(now + Duration::from_secs(30), false);
        dog.sweep(now, true);
        assert_eq!(w_idle.fired(), Some(Fired::Stopping));
        assert_eq!(w_busy.fired(), None);
    }

    #[test]
    fn a_trickled_head_gets_the_header_timeout_in_total() {
        let mut clock = RequestClock::default();
        let t0 = Instant::now();
        assert_eq!(clock.deadline(Phase::Head, t0), t0 + HEADER_READ_TIMEOUT);
        // A byte a second moves nothing: the deadline stays where the first byte put it.
        for s in 1..10 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(clock.deadline(Phase::Head, now), t0 + HEADER_READ_TIMEOUT);
        }
        // The next request on the connection starts its own clock.
        clock.finished();
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(clock.deadline(Phase::Head, t1), t1 + HEADER_READ_TIMEOUT);
        // So does one after an idle wait (the idle read restarts the clock too).
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(clock.deadline(Phase::Idle, t2), t2 + IDLE_KEEPALIVE_TIMEOUT);
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(clock.deadline(Phase::Head, t3), t3 + HEADER_READ_TIMEOUT);
    }

    #[test]
    fn a_body_must_progress_and_end_within_the_body_timeout() {
        let mut clock = RequestClock::default();
        let t0 = Instant::now();
        clock.deadline(Phase::Head, t0);
        let head_done = t0 + Duration::from_secs(2);
        // Each read must make progress within the header timeout...
        assert_eq!(
            clock.deadline(Phase::Body, head_done),
            head_done + HEADER_READ_TIMEOUT
        );
        let later = head_done + Duration::from_secs(25);
        // ...and the body must be complete within the body timeout of the head's end.
        assert_eq!(
            clock.deadline(Phase::Body, later),
            head_done + BODY_READ_TIMEOUT
        );
    }

    #[test]
    fn dropped_connections_are_forgotten_and_disarmed_ones_never_fire() {
        let (_c, server) = pair();
        let dog = Watchdog::default();
        let watch = dog.watch(server.as_raw_fd());
        drop(dog.watch(server.as_raw_fd()));
        watch.arm(Instant::now(), false);
        watch.disarm();
        dog.sweep(Instant::now() + Duration::from_secs(60), true);
        assert_eq!(watch.fired(), None);
        assert_eq!(dog.len(), 1);
    }
}
