//! Feeds arbitrary bytes to `RequestReader`, split into pieces at positions taken from the input
//! itself, and checks the reader's contract: no panic, never consuming more than it was given,
//! bodies within the limit, and the same requests as parsing the whole input at once.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use openchatd::http::{HttpError, Request, RequestReader};

const MAX_BODY: usize = 4096;

fn run(pieces: &[&[u8]]) -> (Vec<Request>, Option<HttpError>) {
    let mut reader = RequestReader::new(MAX_BODY);
    let mut buf = BytesMut::new();
    let mut given = 0usize;
    let mut consumed = 0usize;
    let mut requests = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        given += piece.len();
        loop {
            let before = buf.len();
            let result = reader.poll_request(&mut buf);
            assert!(buf.len() <= before, "the reader never adds bytes");
            consumed += before - buf.len();
            assert!(consumed <= given, "consumed more than was given");
            match result {
                Ok(Some(req)) => {
                    assert!(req.body().len() <= MAX_BODY);
                    assert!(req.path().starts_with('/') || req.path() == "*");
                    let _ = (
                        req.keep_alive(),
                        req.is_websocket_upgrade(),
                        req.headers().count(),
                    );
                    requests.push(req);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!([400, 413, 431, 501, 505].contains(&e.status));
                    return (requests, Some(e));
                }
            }
        }
    }
    (requests, None)
}

fuzz_target!(|data: &[u8]| {
    // First byte picks the split point, so the corpus explores resumption too.
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut) * rest.len() / 255;
    let (whole, whole_err) = run(&[rest]);
    let (split, split_err) = run(&[&rest[..at], &rest[at..]]);
    assert_eq!(whole, split, "splitting the input changed the requests");
    assert_eq!(
        whole_err, split_err,
        "splitting the input changed the error"
    );
});
