//! JSON encoding on the response path: the capabilities document (encoded once at start, but the
//! largest document we build), a JSON error body, and a chat message of the shape the community
//! API will return for every message in a page.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use openchatd::config::Config;
use openchatd::http::Response;
use serde::Serialize;

#[derive(Serialize)]
struct Mention<'a> {
    r#type: &'a str,
    token: &'a str,
    target_id: &'a str,
    display_text: &'a str,
    range: (u32, u32),
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    channel_id: &'a str,
    author_uid: &'a str,
    body: &'a str,
    created_at: &'a str,
    mentions: Vec<Mention<'a>>,
}

fn bench(c: &mut Criterion) {
    let config = Config::from_vars(Vec::<(String, String)>::new(), 2).unwrap();
    c.bench_function("capabilities_document", |b| {
        b.iter(|| {
            openchatd::api::capabilities::encode(
                black_box(&config),
                black_box("0d5f6a8b-1f43-4f4f-9d8e-9ab6f913f4f8"),
            )
        })
    });
    c.bench_function("error_response_body", |b| {
        b.iter(|| Response::error(black_box(404), "not_found", "no such \"channel\"", false))
    });
    let message = Message {
        id: "01J9Z3F5Q8K2M4N6P8R0T2V4X6",
        channel_id: "ch_general",
        author_uid: "uid_1a2b3c4d",
        body: "hello @uid_5e6f7a8b, the build is green — shipping after lunch",
        created_at: "2026-11-25T10:00:00Z",
        mentions: vec![Mention {
            r#type: "user",
            token: "@uid_5e6f7a8b",
            target_id: "uid_5e6f7a8b",
            display_text: "Ana",
            range: (6, 19),
        }],
    };
    c.bench_function("message_object", |b| {
        b.iter(|| simd_json::to_vec(black_box(&message)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
