//! The `agentwatch-ws` command (feature `cli`): `hook` run as Claude Code and Gemini CLI run
//! it, `hooks install|uninstall|status`, the markers it writes read by the monitor, and the
//! dashboard with and without hooks.

#[path = "../common/mod.rs"]
mod common;
#[path = "../dashboard_support/mod.rs"]
mod dashboard_support;
#[path = "../hooks_support/mod.rs"]
mod hooks_support;
#[path = "../monitor_support/mod.rs"]
mod monitor_support;

mod dashboard;
mod gemini;
mod hooks;
mod monitor;
