//! The `dashboard` example as a child process (features `monitor` and `redis`): its roots
//! and output on real logs, reloads, `--notify-url` pushes, and nodes sharing one Redis or one NATS JetStream.

#[path = "../common/mod.rs"]
mod common;
#[path = "../dashboard_support/mod.rs"]
mod dashboard_support;
#[path = "../monitor_support/mod.rs"]
mod monitor_support;

mod cluster;
mod cluster_nats;
mod http_api;
mod monitor;
mod notify;
mod reload;
