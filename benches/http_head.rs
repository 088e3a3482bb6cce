//! Criterion benches for the HTTP layer's hot path: parsing the request heads the desktop client
//! sends and encoding a small JSON response. Run with `cargo bench --bench http_head`; compare
//! against a saved baseline (`-- --save-baseline main` / `-- --baseline main`).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use openchatd::http::limits::DEFAULT_MAX_BODY_BYTES;
use openchatd::http::response::format_http_date;
use openchatd::http::{Request, RequestReader, Response};

/// What the Electron client sends for a message-history read: eight header fields.
const DESKTOP_GET: &[u8] = b"GET /v1/channels/ch_4f1c2a9e/messages?limit=150 HTTP/1.1\r\n\
Host: chat.example.org\r\n\
Connection: keep-alive\r\n\
Accept: application/json\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) OpenChat/0.9.4 Chrome/128.0.6613.186 Electron/32.2.0 Safari/537.36\r\n\
X-OpenChat-User-UID: uid_0a1b2c3d\r\n\
X-OpenChat-Device-ID: desktop_9f8e7d6c\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US\r\n\
\r\n";

fn desktop_post() -> Vec<u8> {
    let body = br#"{"content":"hello from the bench, with a few more words to look like a real message","client_nonce":"n_7f3a9c","reply_to":null}"#;
    let mut raw = format!(
        "POST /v1/channels/ch_4f1c2a9e/messages HTTP/1.1\r\nHost: chat.example.org\r\n\
         Connection: keep-alive\r\nContent-Type: application/json\r\nAccept: application/json\r\n\
         X-OpenChat-User-UID: uid_0a1b2c3d\r\nX-OpenChat-Device-ID: desktop_9f8e7d6c\r\n\
         Idempotency-Key: idem_5b6c7d8e\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(DESKTOP_GET.len() as u64));
    group.bench_function("desktop_get", |b| {
        let mut reader = RequestReader::new(DEFAULT_MAX_BODY_BYTES);
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(DESKTOP_GET));
            let req = reader.poll_request(&mut buf).unwrap().unwrap();
            black_box(req.header("x-openchat-user-uid"));
            req
        })
    });
    let post = desktop_post();
    group.throughput(Throughput::Bytes(post.len() as u64));
    group.bench_function("post_json", |b| {
        b.iter(|| Request::from_bytes(black_box(&post), DEFAULT_MAX_BODY_BYTES).unwrap())
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let date = format_http_date(1_764_000_000);
    let response = Response::json(
        200,
        &br#"{"server_id":"srv_default","display_name":"Home","unread":3}"#[..],
    );
    let mut out = Vec::with_capacity(1024);
    c.bench_function("encode/small_json", |b| {
        b.iter(|| {
            out.clear();
            black_box(&response).encode(&mut out, &date, true, false);
            black_box(out.len())
        })
    });
    c.bench_function("encode/http_date", |b| {
        b.iter(|| format_http_date(black_box(1_764_000_000)))
    });
}

/// A 4 MiB upload form (one text field, one file of pseudo-random bytes): the delimiter
/// search over a large body, whole and streamed in 64 KiB pieces as the upload spooler feeds it.
fn multipart(c: &mut Criterion) {
    use openchatd::http::multipart::{MultipartStream, parse_multipart};
    const BOUNDARY: &str = "----openchatBenchBoundary7MA4YWxkTrZu0gW";
    let mut file = vec![0u8; 4 << 20];
    let mut x: u32 = 0x9E37_79B9;
    for byte in &mut file {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    let mut body = Vec::with_capacity(file.len() + 512);
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nhello\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut group = c.benchmark_group("multipart");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse_4mib", |b| {
        b.iter(|| parse_multipart(black_box(&body), BOUNDARY).unwrap().len())
    });
    group.bench_function("stream_4mib_64k_pieces", |b| {
        b.iter(|| {
            let mut stream = MultipartStream::new(BOUNDARY).unwrap();
            let mut events = 0usize;
            for piece in body.chunks(64 * 1024) {
                stream.feed(piece);
                while stream.next_event().unwrap().is_some() {
                    events += 1;
                }
            }
            while stream.finish().unwrap().is_some() {
                events += 1;
            }
            black_box(events)
        })
    });
    group.finish();
}

criterion_group!(benches, parse, encode, multipart);
criterion_main!(benches);
