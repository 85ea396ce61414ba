//! The dashboard from a clone: `cargo run --example dashboard [-- FLAGS]` runs what
//! `agentwatch-ws dashboard [FLAGS]` runs once installed (`cargo install agentwatch-ws
//! --features cli`). `--help` lists the flags; the code and what the page shows are
//! documented in `src/bin/agentwatch-ws/dashboard/mod.rs`.

#[path = "../../src/bin/agentwatch-ws/dashboard/mod.rs"]
mod dashboard;

fn main() -> std::process::ExitCode {
    dashboard::run(std::env::args_os())
}
