//! The server's log captured in memory: the binary's own subscriber
//! (`openchatd::logging::install`, with the caps on the dependencies that print secrets and the
//! `log` crate's records routed in) at its most talkative, `trace`, writing into a buffer the
//! test then searches. One subscriber per test process: the first call installs it.

use std::sync::{Arc, Mutex, OnceLock};

/// Everything any server of this test process logged, at trace level, in `format`. The format
/// of the first call wins.
pub fn captured(format: openchatd::config::LogFormat) -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        openchatd::logging::install("trace", format, move || Writer(sink.clone()), false)
            .expect("one subscriber");
        buffer
    })
}

/// The captured log so far, as text.
pub fn text(format: openchatd::config::LogFormat) -> String {
    String::from_utf8_lossy(&captured(format).lock().unwrap()).into_owned()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
