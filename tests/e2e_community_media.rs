//! Images through the community API (wire contract A.5, A.6), as the desktop client sends
//! and shows them: attachments checked by content, stripped of metadata and served; profiles
//! with avatars uploaded, scaled and synced. Every test runs against a real server with two
//! shards, on embedded SQLite and on Postgres, over real sockets.

mod support;

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, default_channel};
use support::json::{Json, JsonPath, encode, key_set};
use support::media;
use support::multipart::Multipart;
use support::server::{PUBLIC_BASE_URL, start_community};
use support::ws::{QUIET, created_id, socket};

use support::on_both_engines;

on_both_engines! {
    image_attachments_are_checked_stripped_and_served => |engine| {
        let server = start_community(engine, &[("OPENCHAT_MAX_UPLOAD_BYTES", "200000")]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let mut ws = socket(&server, &alice, &server_id);
        let png = media::png_with_text(40, 30, "Comment", "SECRET-PNG-TEXT");
        let jpeg = media::jpeg_with_exif(24, 16, "SECRET-EXIF-GPS");
        assert!(media::contains(&png, b"SECRET-PNG-TEXT") && media::contains(&jpeg, b"SECRET-EXIF-GPS"));

        let reply = alice.post_multipart(
            &format!("/v1/channels/{general}/messages"),
            Multipart::new()
                .text("body", "four pictures")
                .file("files", "shot.png", "image/png", &png)
                .file("files", "photo.jpg", "image/jpeg", &jpeg)
                .file("files", "wave.gif", "image/gif", &media::gif(12, 10))
                // The type is read from the content, not from the name or the declared type.
                .file("files", "liar.png", "image/png", &media::jpeg(9, 7)),
        );
        assert_eq!(reply.status, 201, "{}", reply.text());
        let message = reply.json().at("message").clone();
        assert_eq!(message.str_at("body"), "four pictures");
        let attachments = message.arr_at("attachments");
        assert_eq!(attachments.len(), 4, "{}", encode(&message));
        let expected = [
            ("shot.png", "image/png", (40, 30), "SECRET-PNG-TEXT"),
            ("photo.jpg", "image/jpeg", (24, 16), "SECRET-EXIF-GPS"),
            ("wave.gif", "image/gif", (12, 10), "SECRET"),
            ("liar.png", "image/jpeg", (9, 7), "SECRET"),
        ];
        for (attachment, (name, content_type, (w, h), secret)) in attachments.iter().zip(expected) {
            assert_eq!(
                attachment.keys_at(""),
                key_set(&["attachment_id", "file_name", "url", "width", "height", "content_type", "bytes"])
            );
            assert_eq!(attachment.str_at("file_name"), name);
            assert_eq!(attachment.str_at("content_type"), content_type);
            assert_eq!(attachment.i64_at("width"), w as i64);
            assert_eq!(attachment.i64_at("height"), h as i64);
            let url = attachment.str_at("url");
            let prefix = format!("{PUBLIC_BASE_URL}/v1/attachments/");
            assert!(url.starts_with(&prefix), "{url}");
            // Served without identity, with CORS, as the image it is, cacheable, metadata gone.
            let served = Client::anonymous(server.addr).get(&url[PUBLIC_BASE_URL.len()..]);
            assert_eq!(served.status, 200);
            assert_eq!(served.header("content-type"), Some(content_type));
            assert!(served.header("cache-control").is_some_and(|c| c.contains("max-age")), "{:?}", served.headers);
            assert_eq!(served.body.len() as i64, attachment.i64_at("bytes"));
            assert!(!media::contains(&served.body, secret.as_bytes()), "{secret} was not stripped");
            assert!(!media::contains(&served.body, b"Exif"));
            assert_eq!(media::dimensions(&served.body), (w, h));
        }
        let event = ws.expect("chat.message.created");
        assert_eq!(encode(event.at("payload.message.attachments")), encode(message.at("attachments")));
        let page = alice.messages(&general, "limit=5");
        assert_eq!(encode(page.at("messages.0.attachments")), encode(message.at("attachments")));

        // A multipart post may reply too.
        let with_reply = alice.post_multipart(
            &format!("/v1/channels/{general}/messages"),
            Multipart::new().text("body", "about those").text("reply_to_message_id", message.str_at("id")).file("files", "b.png", "image/png", &media::png(3, 3)),
        );
        assert_eq!(with_reply.status, 201, "{}", with_reply.text());
        let with_reply = with_reply.json();
        assert_eq!(with_reply.str_at("message.reply_to.message_id"), message.str_at("id"));
        assert_eq!(with_reply.str_at("message.reply_to.preview_text"), "four pictures");
        assert_eq!(with_reply.arr_at("message.attachments").len(), 1);
        ws.expect_where("chat.message.created", |f| created_id(f) == with_reply.str_at("message.id"));

        // An image with no text is a message too.
        let only_image = alice.post_multipart(&format!("/v1/channels/{general}/messages"), Multipart::new().file("files", "a.png", "image/png", &media::png(4, 4)));
        assert_eq!(only_image.status, 201, "{}", only_image.text());
        assert_eq!(only_image.json().str_at("message.body"), "");
        // A pasted WebP (the composer takes any image/*), checked by content like the others.
        let webp = {
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::from_fn(8, 6, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 7])).write_to(&mut out, image::ImageFormat::WebP).unwrap();
            out.into_inner()
        };
        let pasted = alice.post_multipart(&format!("/v1/channels/{general}/messages"), Multipart::new().file("files", "paste.webp", "image/webp", &webp));
        assert_eq!(pasted.status, 201, "{}", pasted.text());
        let pasted = pasted.json();
        assert_eq!(pasted.str_at("message.attachments.0.content_type"), "image/webp");
        assert_eq!((pasted.i64_at("message.attachments.0.width"), pasted.i64_at("message.attachments.0.height")), (8, 6));
        ws.expect_where("chat.message.created", |f| created_id(f) == pasted.str_at("message.id"));

        // Refusals store nothing: a text file named .png, an image over the upload limit, five files.
        let count = || alice.messages(&general, "limit=50").arr_at("messages").len();
        let before = count();
        let fake = alice.post_multipart(
            &format!("/v1/channels/{general}/messages"),
            Multipart::new().text("body", "fake").file("files", "ok.png", "image/png", &media::png(8, 8)).file("files", "evil.png", "image/png", b"#!/bin/sh\necho this is not an image\n"),
        );
        assert!((400..500).contains(&fake.status), "{}", fake.text());
        fake.assert_error(415, "unsupported_media_type");
        let noise: Vec<u8> = (0..300 * 300 * 3).map(|_| rand::random::<u8>()).collect();
        let big = image::RgbImage::from_raw(300, 300, noise).unwrap();
        let mut big_png = std::io::Cursor::new(Vec::new());
        big.write_to(&mut big_png, image::ImageFormat::Png).unwrap();
        let big_png = big_png.into_inner();
        assert!(big_png.len() > 200_000);
        alice.post_multipart(&format!("/v1/channels/{general}/messages"), Multipart::new().text("body", "big").file("files", "big.png", "image/png", &big_png))
            .assert_error(413, "payload_too_large");
        let mut five = Multipart::new().text("body", "five");
        for i in 0..5 {
            five = five.file("files", &format!("{i}.png"), "image/png", &media::png(2, 2));
        }
        alice.post_multipart(&format!("/v1/channels/{general}/messages"), five).assert_error(400, "too_many_attachments");
        assert_eq!(count(), before);
        // The upload limit holds for the sum of one message's files too (the client checks
        // both): two files each under it, together over it.
        let half = |seed: u8| {
            let noise: Vec<u8> = (0..200 * 200 * 3).map(|i: usize| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ rand::random::<u8>()).collect();
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::from_raw(200, 200, noise).unwrap().write_to(&mut out, image::ImageFormat::Png).unwrap();
            out.into_inner()
        };
        let (a, b) = (half(1), half(2));
        assert!(a.len() < 200_000 && b.len() < 200_000 && a.len() + b.len() > 200_000, "{} + {}", a.len(), b.len());
        let each_alone = alice.post_multipart(&format!("/v1/channels/{general}/messages"), Multipart::new().file("files", "a.png", "image/png", &a));
        assert_eq!(each_alone.status, 201, "{}", each_alone.text());
        let before = count();
        alice.post_multipart(&format!("/v1/channels/{general}/messages"), Multipart::new().text("body", "two").file("files", "a.png", "image/png", &a).file("files", "b.png", "image/png", &b))
            .assert_error(413, "payload_too_large");
        assert_eq!(count(), before);
        let allowed = [only_image.json().str_at("message.id").to_owned(), each_alone.json().str_at("message.id").to_owned()];
        ws.assert_none_where("chat.message.created", QUIET, |f| !allowed.iter().any(|id| id == f.str_at("payload.message.id")));
    };

    profiles_and_avatars => |engine| {
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, _) = default_channel(&server, &alice);
        let bob = Client::user(server.addr);
        let mut bob_ws = socket(&server, &bob, &server_id);
        let _alice_ws = socket(&server, &alice, &server_id);

        // Optimistic concurrency on the profile.
        let put = |headers: &[(&str, &str)], body: Json| alice.request("PUT", "/v1/profile/me", headers, Some(("application/json", encode(&body).as_bytes())));
        let first = put(&[("If-Match", "0")], json!({"display_name": "Cafe\u{301} Alice", "avatar_mode": "generated", "avatar_preset_id": "preset-7"}));
        assert_eq!(first.status, 200, "{}", first.text());
        let first = first.json();
        assert_eq!(first.str_at("display_name"), "Café Alice", "NFC-normalized");
        assert_eq!(first.i64_at("profile_version"), 1);
        assert_eq!(first.str_at("avatar_preset_id"), "preset-7");
        put(&[("If-Match", "0")], json!({"display_name": "Stale"})).assert_error(409, "profile_conflict");
        put(&[], json!({"display_name": "x".repeat(33)})).assert_error(400, "invalid_display_name");
        assert_eq!(alice.get("/v1/profile/me").json().str_at("display_name"), "Café Alice");
        let event = bob_ws.expect("profile_updated");
        assert_eq!(event.str_at("payload.user_uid"), alice.uid());
        assert_eq!(event.str_at("payload.display_name"), "Café Alice");
        assert_eq!(event.i64_at("payload.profile_version"), 1);
        assert!(!event.keys_at("payload").contains(&"profile".to_owned()), "the profile is the payload, flat: {}", encode(&event));

        // Avatars: checked by content, served anonymously, usable by their uploader only.
        let upload = alice.post_multipart("/v1/profile/avatar", Multipart::new().file("file", "me.png", "image/png", &media::png_with_text(64, 64, "Author", "SECRET-AVATAR")));
        assert_eq!(upload.status, 201, "{}", upload.text());
        let upload = upload.json();
        assert_eq!(upload.i64_at("width"), 64);
        assert_eq!(upload.str_at("content_type"), "image/png");
        let asset = upload.str_at("avatar_asset_id").to_owned();
        let url = upload.str_at("avatar_url").to_owned();
        assert!(url.starts_with(&format!("{PUBLIC_BASE_URL}/v1/profile/avatar/")), "{url}");
        let served = Client::anonymous(server.addr).get(&url[PUBLIC_BASE_URL.len()..]);
        assert_eq!(served.status, 200);
        assert_eq!(served.header("content-type"), Some("image/png"));
        assert!(!media::contains(&served.body, b"SECRET-AVATAR"));
        alice.post_multipart("/v1/profile/avatar", Multipart::new().file("file", "me.png", "image/png", b"GIF? no, plain text"))
            .assert_error(415, "unsupported_media_type");
        // What the client offers: WebP, and any size up to 2 MB (it never reads the dimension
        // limit): a large image is scaled down to fit, not refused.
        let webp = {
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 90])).write_to(&mut out, image::ImageFormat::WebP).unwrap();
            out.into_inner()
        };
        let up = alice.post_multipart("/v1/profile/avatar", Multipart::new().file("file", "me.webp", "image/webp", &webp));
        assert_eq!(up.status, 201, "{}", up.text());
        let up = up.json();
        assert_eq!((up.str_at("content_type"), up.i64_at("width"), up.i64_at("height")), ("image/webp", 40, 30));
        let large = {
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::from_fn(1500, 1500, |x, y| image::Rgb([(x / 6) as u8, (y / 6) as u8, 128])).write_to(&mut out, image::ImageFormat::Png).unwrap();
            out.into_inner()
        };
        assert!(large.len() < 2 * 1024 * 1024);
        let up = alice.post_multipart("/v1/profile/avatar", Multipart::new().file("file", "big.png", "image/png", &large));
        assert_eq!(up.status, 201, "{}", up.text());
        let up = up.json();
        assert_eq!((up.i64_at("width"), up.i64_at("height")), (1024, 1024), "scaled to the avatar limit");
        let served = Client::anonymous(server.addr).get(&up.str_at("avatar_url")[PUBLIC_BASE_URL.len()..]);
        assert_eq!(served.status, 200);
        assert_eq!(media::dimensions(&served.body), (1024, 1024));
        bob.put("/v1/profile/me", &json!({"avatar_mode": "uploaded", "avatar_asset_id": asset.as_str()})).assert_error(403, "avatar_asset_forbidden");
        let with_avatar = put(&[("If-Match", "1")], json!({"avatar_mode": "uploaded", "avatar_asset_id": asset.as_str()}));
        assert_eq!(with_avatar.status, 200, "{}", with_avatar.text());
        assert_eq!(with_avatar.json().str_at("avatar_url"), url);

        // Batches.
        let batch = bob.get(&format!("/v1/profiles:batch?user_uid={}&user_uid={}&user_uid=uid_00000000", alice.uid(), bob.uid()));
        assert_eq!(batch.status, 200, "{}", batch.text());
        let batch = batch.json();
        let profiles = batch.arr_at("profiles");
        assert_eq!(profiles.len(), 3);
        assert_eq!(profiles[0].str_at("display_name"), "Café Alice");
        assert_eq!(profiles[0].str_at("avatar_url"), url);
        assert_eq!(profiles[2].i64_at("profile_version"), 0);
    };
}
