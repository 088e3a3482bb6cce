//! Fuzz-like loops: random and mutated inputs into every check and every
//! argument position, and mutated `public_state`s, must never panic.

use super::*;

/// xorshift64*, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    match rng.below(5) {
        0 => {
            // flip a few bytes
            for _ in 0..=rng.below(4) {
                let i = rng.below(v.len());
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
        1 => {
            let cut = rng.below(v.len());
            v.truncate(cut);
        }
        2 => {
            let i = rng.below(v.len());
            if let Some(b) = v.get_mut(i) {
                *b = 0xff;
            }
        }
        3 => {
            let i = rng.below(v.len() + 1);
            v.insert(i.min(v.len()), rng.next() as u8);
        }
        _ => {
            // set a length-ish byte to something large
            let i = rng.below(v.len().min(64));
            if let Some(b) = v.get_mut(i) {
                *b = 0x7f;
            }
        }
    }
    v
}

#[test]
fn public_state_fuzz_no_panic() {
    let mut w = world();
    let state = w.accepted.state.clone();
    let a = update(&w.alice, &mut w.ga);
    let expected = accept(&state, &a).expect("normal");
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let rounds = if cfg!(debug_assertions) { 40 } else { 400 };
    let mut from_public_state = 0;
    for i in 0..rounds {
        let mut bad = mutate(&mut rng, &state.public_state);
        if i % 3 == 0 {
            // A second mutation deeper inside (the JSON values).
            bad = mutate(&mut rng, &bad);
        }
        let s = GroupState {
            public_state: bad,
            ..state.clone()
        };
        let r = accept(&s, &a).unwrap_or_else(|e| panic!("round {i}: {e:?}"));
        assert_eq!(r.state, expected.state, "round {i}");
        if r.loaded_from == StateSource::PublicState {
            from_public_state += 1;
        }
        // A refused commit stays refused with any public_state.
        if i % 10 == 0 {
            let junk = Bundle {
                commit: a.commit.clone(),
                welcome: None,
                group_info: w.add.group_info.clone(),
            };
            assert!(accept(&s, &junk).is_err());
        }
    }
    // Most mutations make the state unusable; the rest hit bytes nothing reads.
    assert!(from_public_state < rounds, "{from_public_state}");
}

#[test]
fn fuzz_no_panic() {
    let mut w = world();
    let dev = Dev::new("dev-1");
    let (kp, _) = dev.kp();
    let state = w.accepted.state.clone();
    let next = update(&w.alice, &mut w.ga);
    let ct = bytes(
        &w.gb
            .create_message(&w.bob.provider, &w.bob.signer, b"x")
            .expect("message"),
    );
    let samples: Vec<&[u8]> = vec![
        &kp,
        &w.genesis,
        &w.add.commit,
        w.add.welcome.as_deref().unwrap_or(&[]),
        &w.add.group_info,
        &next.commit,
        &next.group_info,
        &ct,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = now();
    // Random byte strings (half with a plausible MLSMessage header) into every
    // function and every argument position.
    for i in 0..2000 {
        let len = rng.below(300);
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && input.len() >= 4 {
            input[0] = 0;
            input[1] = 1;
            input[2] = 0;
            input[3] = 1 + rng.below(5) as u8;
        }
        feed_all(&w, &dev, &state, &next, &input, t, i % 100 == 0);
    }
    // Mutated valid messages. Each mutant that still decodes costs signature
    // checks, which are ~200x slower in an unoptimized build, so the deep
    // commit positions get a smaller share there.
    let deep_every = if cfg!(debug_assertions) { 25 } else { 1 };
    let mut accepted_mutants = 0;
    for i in 0..2000 {
        let src = samples[rng.below(samples.len())];
        let input = mutate(&mut rng, src);
        let _ = validate_key_package(&input, "dev-1", &dev.key(), t);
        let _ = check_genesis(CH.as_bytes(), &input);
        let _ = check_application(CH.as_bytes(), &input);
        if i % deep_every == 0 {
            if check_commit(
                CH.as_bytes(),
                Some(&state),
                None,
                &input,
                None,
                &next.group_info,
                t,
            )
            .is_ok()
            {
                accepted_mutants += 1;
            }
            feed_all(&w, &dev, &state, &next, &input, t, i % 100 == 0);
        }
    }
    // A mutant can only be accepted if the mutation changed nothing signed.
    assert!(
        accepted_mutants <= 5,
        "{accepted_mutants} mutated commits accepted"
    );
}

fn feed_all(
    w: &World,
    dev: &Dev,
    state: &GroupState,
    next: &Bundle,
    input: &[u8],
    t: u64,
    as_state: bool,
) {
    let _ = validate_key_package(input, "dev-1", &dev.key(), t);
    let _ = check_genesis(CH.as_bytes(), input);
    let _ = check_application(CH.as_bytes(), input);
    let _ = check_commit(
        CH.as_bytes(),
        Some(state),
        None,
        input,
        None,
        &next.group_info,
        t,
    );
    let _ = check_commit(
        CH.as_bytes(),
        Some(state),
        None,
        &next.commit,
        None,
        input,
        t,
    );
    let _ = check_commit(
        CH.as_bytes(),
        None,
        Some(input),
        &w.add.commit,
        w.add.welcome.as_deref(),
        &w.add.group_info,
        t,
    );
    let _ = check_commit(
        CH.as_bytes(),
        None,
        Some(&w.genesis),
        &w.add.commit,
        Some(input),
        &w.add.group_info,
        t,
    );
    if as_state {
        let bogus = GroupState {
            epoch: 1,
            group_info: input.to_vec(),
            public_state: Vec::new(),
        };
        let _ = check_commit(
            CH.as_bytes(),
            Some(&bogus),
            None,
            &next.commit,
            None,
            &next.group_info,
            t,
        );
    }
}
