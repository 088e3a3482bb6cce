//! The MLS delivery service's checks (`openchatd::mls`), which run on the shard that takes the
//! request: a KeyPackage upload, a self-update commit of a 10-member group checked from the kept
//! public state and from the GroupInfo alone (the fallback), and an application message's
//! header. Inputs come from real openmls clients (`tests/support/mls_client.rs`).
//!
//! `cargo bench --bench mls`

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use openchatd::mls;

#[path = "../tests/support/mls_client.rs"]
mod mls_client;

use mls_client::MlsDevice;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bench(c: &mut Criterion) {
    let channel = "ch_bench";
    let mut creator = MlsDevice::new("dev_0", [1; 32]);
    let genesis = creator.create_group(channel);
    let mut others: Vec<MlsDevice> = (1..10)
        .map(|i| MlsDevice::new(&format!("dev_{i}"), [i as u8 + 1; 32]))
        .collect();
    let packages: Vec<Vec<u8>> = others.iter().map(|d| d.key_packages(1).remove(0)).collect();
    let bundle = creator.commit_changes(channel, &packages, &[]);
    let accepted = mls::check_commit(
        channel.as_bytes(),
        None,
        Some(&genesis),
        &bundle.commit,
        bundle.welcome.as_deref(),
        &bundle.group_info,
        now(),
    )
    .expect("the first commit is accepted");
    creator.merge_pending(channel);
    for d in &mut others {
        d.join(bundle.welcome.as_deref().unwrap());
    }
    let state = accepted.state;
    let update = others[0].commit_update(channel);

    let package = creator.key_packages(1).remove(0);
    c.bench_function("mls validate_key_package", |b| {
        b.iter(|| {
            mls::validate_key_package(black_box(&package), "dev_0", &creator.identity_key(), now())
                .unwrap()
        })
    });
    c.bench_function(
        "mls check_commit self-update, 10 members, from public_state",
        |b| {
            b.iter(|| {
                mls::check_commit(
                    channel.as_bytes(),
                    Some(black_box(&state)),
                    None,
                    &update.commit,
                    None,
                    &update.group_info,
                    now(),
                )
                .unwrap()
            })
        },
    );
    let without = mls::GroupState {
        public_state: Vec::new(),
        ..state.clone()
    };
    c.bench_function(
        "mls check_commit self-update, 10 members, from the GroupInfo",
        |b| {
            b.iter(|| {
                mls::check_commit(
                    channel.as_bytes(),
                    Some(black_box(&without)),
                    None,
                    &update.commit,
                    None,
                    &update.group_info,
                    now(),
                )
                .unwrap()
            })
        },
    );
    let message = creator.encrypt(channel, &[7u8; 200]);
    c.bench_function("mls check_application", |b| {
        b.iter(|| mls::check_application(channel.as_bytes(), black_box(&message)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
