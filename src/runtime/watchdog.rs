//! Connection timeouts without a timer per read. Arming a glommio timer on every read costs an
//! io_uring timeout and a cancel per request, measurable on `/healthz` throughput. Instead each
//! connection owns a [`Watch`] holding its current deadline (a `Cell` write per read), and one
//! sweeper per shard looks at all of them every [`SWEEP_INTERVAL`]. An expired connection's
//! read side is shut down (`shutdown(fd, SHUT_RD)`), which completes its pending read with
//! end-of-file; the driver then asks the watch why and answers 408 or closes. Shutdown uses the
//! same path for idle keep-alive connections.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

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
            // SAFETY: `fd` belongs to a connection that is still alive (we hold a strong
            // reference obtained from its Weak, and the connection drops its Watch only after
            // the socket is closed... see `Watchdog::sweep`).
            unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
        }
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
