//! A TCP proxy that can pull the plug: the way tests make a database (or any TCP peer)
//! disappear and come back without touching the real server.
//!
//! [`Proxy::start`] listens on `127.0.0.1:0` and forwards every connection to a target, two
//! threads per connection. [`Proxy::stop`] closes the listener (new connections are refused) and
//! shuts down every live connection, which is what a crashed or restarted server looks like to
//! a client. [`Proxy::restart`] listens again on the *same* port, so clients configured with the
//! proxy's address reconnect without being told anything.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const ACCEPT_POLL: Duration = Duration::from_millis(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REBIND_DEADLINE: Duration = Duration::from_secs(5);

pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
    /// Both ends of every forwarded connection, so `stop` can cut them.
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Starts forwarding from a fresh port on 127.0.0.1 to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy listener");
        let addr = listener.local_addr().expect("proxy listener address");
        Proxy {
            addr,
            target,
            running: Some(Running::spawn(listener, target)),
        }
    }

    /// The address clients should connect to; stable across stop/restart.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Refuses new connections and cuts all live ones. Idempotent.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }

    /// Listens again on the same port. Panics if the port cannot be reclaimed in a few seconds.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "restart of a running proxy");
        let deadline = Instant::now() + REBIND_DEADLINE;
        let listener = loop {
            // std sets SO_REUSEADDR, so connections in TIME_WAIT do not block the rebind.
            match TcpListener::bind(self.addr) {
                Ok(listener) => break listener,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => panic!("cannot rebind proxy on {}: {error}", self.addr),
            }
        };
        self.running = Some(Running::spawn(listener, self.target));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Running {
    fn spawn(listener: TcpListener, target: SocketAddr) -> Running {
        // Non-blocking accept polled against a flag: the simplest way to stop an acceptor
        // thread without a self-connect trick.
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let stop = stop.clone();
            let connections = connections.clone();
            std::thread::Builder::new()
                .name("test-proxy-accept".to_owned())
                .spawn(move || accept_loop(listener, target, &stop, &connections))
                .expect("spawn proxy acceptor")
        };
        Running {
            stop,
            acceptor,
            connections,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        // After the join no new connection can be registered, so the sweep below is complete;
        // the listener is dropped (closed) when the acceptor returns.
        let _ = self.acceptor.join();
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    stop: &AtomicBool,
    connections: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if let Err(error) = forward(client, target, connections) {
                    eprintln!("test proxy: cannot forward to {target}: {error}");
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(error) => {
                eprintln!("test proxy: accept failed: {error}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

fn forward(
    client: TcpStream,
    target: SocketAddr,
    connections: &Mutex<Vec<TcpStream>>,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut live = connections.lock().unwrap();
        live.push(client.try_clone()?);
        live.push(server.try_clone()?);
    }
    pump(client.try_clone()?, server.try_clone()?);
    pump(server, client);
    Ok(())
}

/// Copies `from` into `to` until either side ends, then tears the pair down so the opposite
/// pump ends too.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
