//! `openchat-load`: drives an openchatd started with `OPENCHAT_AUTH_MODE=headers` through the
//! wire contract (A.3, A.5, A.7) and prints what it measured: a human summary, then one JSON
//! line with the same figures.
//!
//! - `send`: keep-alive connections posting messages back-to-back; committed messages/s.
//! - `fanout`: many realtime subscribers, paced open-loop senders; send→frame latency.
//! - `idle`: many idle realtime sockets; the server's memory per socket.
//!
//! One multi-threaded tokio runtime drives every socket (a task each, no thread per socket);
//! see `openchat-load --help` and docs/benchmarks.md.

use std::process::ExitCode;

#[path = "openchat-load/api.rs"]
mod api;
#[path = "openchat-load/args.rs"]
mod args;
#[path = "openchat-load/fanout.rs"]
mod fanout;
#[path = "openchat-load/hist.rs"]
mod hist;
#[path = "openchat-load/http.rs"]
mod http;
#[path = "openchat-load/idle.rs"]
mod idle;
#[path = "openchat-load/net.rs"]
mod net;
#[cfg(test)]
#[path = "openchat-load/selftest.rs"]
mod selftest;
#[path = "openchat-load/send.rs"]
mod send;
#[path = "openchat-load/ws.rs"]
mod ws;

use args::Command;

/// A finished run: its summary, its JSON line, and whether it saw failures.
struct Outcome {
    human: String,
    json: Result<String, String>,
    failed: bool,
}

impl Outcome {
    fn of<R: serde::Serialize>(report: &R, human: String, failed: bool) -> Outcome {
        Outcome {
            human,
            json: simd_json::to_string(report).map_err(|e| e.to_string()),
            failed,
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command = match args::parse(&argv) {
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(e) => {
            eprintln!("openchat-load: {e}");
            return ExitCode::from(2);
        }
    };
    let nofile = match net::raise_nofile_limit() {
        Ok((_, now)) => now,
        Err(e) => {
            eprintln!("openchat-load: cannot raise the descriptor limit: {e}");
            0
        }
    };
    let threads = match &command {
        Command::Send(a) => a.common.threads,
        Command::Fanout(a) => a.common.threads,
        Command::Idle(a) => a.common.threads,
        Command::Help => 1,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("openchat-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match &command {
            Command::Send(a) => send::run(a)
                .await
                .map(|r| Outcome::of(&r, r.human(), r.failed())),
            Command::Fanout(a) => fanout::run(a)
                .await
                .map(|r| Outcome::of(&r, r.human(), r.failed())),
            Command::Idle(a) => idle::run(a, nofile)
                .await
                .map(|r| Outcome::of(&r, r.human(), r.failed())),
            Command::Help => unreachable!("handled above"),
        }
    });
    // Tasks still blocked on a dead server must not hold the exit.
    runtime.shutdown_background();
    match outcome {
        Ok(outcome) => {
            print!("{}", outcome.human);
            match outcome.json {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("openchat-load: cannot encode the report: {e}"),
            }
            if outcome.failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("openchat-load: {e}");
            ExitCode::FAILURE
        }
    }
}
