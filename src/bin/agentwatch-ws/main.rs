//! `agentwatch-ws`: the dashboard, the hook command Claude Code and Gemini CLI run, and the
//! installer of its hook entries.
//!
//! ```text
//! cargo install agentwatch-ws --features cli
//! agentwatch-ws dashboard                # http://127.0.0.1:3000/ (flags: dashboard --help)
//! agentwatch-ws hooks install            # adds the hooks to ~/.claude/settings.json
//! agentwatch-ws hooks status
//! agentwatch-ws hooks uninstall
//! agentwatch-ws hooks install --agent gemini   # ~/.gemini/settings.json (Gemini CLI 0.26+)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agentwatch_ws::hooks::{self, Change, InstallError, Outcome};
use agentwatch_ws::markers::{self, HooksStatus};
use agentwatch_ws::wire::Timestamp;
use clap::{Args, Parser, Subcommand};

mod dashboard;

/// `println!` that never panics: a closed stdout (`agentwatch-ws hooks install | head -1`)
/// loses the rest of the report, not the exit code (the settings file is written already).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Live AI-coding-agent activity: a dashboard of your agents' sessions, and the Claude Code
/// hooks that tell it when one waits for your permission.
///
/// Claude Code leaves no trace of a permission prompt in its session log, so a session waiting
/// for your answer looks busy. With the hooks installed, Claude Code runs `agentwatch-ws hook`
/// on its hook events; each run drops a small marker file (session id, event, tool name, time:
/// never the tool's input, your prompt or a message) into the marker directory, which the
/// agentwatch-ws monitor and dashboard read. Gemini CLI writes a tool call into its chat only
/// once it finished; its hooks (`--agent gemini`) tell the same command about its permission
/// prompts.
#[derive(Parser)]
#[command(name = "agentwatch-ws", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the live dashboard of your agents' sessions (http://127.0.0.1:3000/).
    ///
    /// Watches the default log roots of Claude Code, Codex CLI and Gemini CLI (or runs a
    /// simulation when there are none). Its flags follow: `agentwatch-ws dashboard --help`.
    #[command(disable_help_flag = true)]
    Dashboard {
        /// The dashboard's flags (`--port N`, `--demo`, `--claude DIR`, `--notify-url URL`,
        /// …; `--help` lists them).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "FLAGS"
        )]
        args: Vec<String>,
    },
    /// Run as a Claude Code or Gemini CLI hook: read the hook's JSON on stdin, write one
    /// marker.
    ///
    /// Reads at most 64 MiB of stdin; prints nothing to stdout; exits 0 (a marker written, or
    /// an event the monitor has no use for) or 1 with a one-line reason on stderr (bad input
    /// or an unwritable directory: nothing is written). It never exits 2, which would make
    /// Claude Code block the event.
    Hook {
        #[command(flatten)]
        dir: MarkerDir,
    },
    /// Install, remove or check the hook entries in Claude Code's (or, with `--agent gemini`,
    /// Gemini CLI's) user settings.
    Hooks {
        #[command(subcommand)]
        action: HooksAction,
    },
}

#[derive(Args, Clone)]
struct MarkerDir {
    /// The marker directory [default: $AGENTWATCH_MARKER_DIR, else
    /// $XDG_STATE_HOME/agentwatch/markers, else ~/.local/state/agentwatch/markers].
    #[arg(long, value_name = "DIR")]
    marker_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct SettingsFile {
    /// The agent whose settings are edited: claude (Claude Code) or gemini (Gemini CLI 0.26
    /// or later).
    #[arg(long, value_enum, default_value_t = Agent::Claude)]
    agent: Agent,
    /// The agent's settings file [default: claude: $CLAUDE_CONFIG_DIR/settings.json, else
    /// ~/.claude/settings.json; gemini: $GEMINI_CLI_HOME/.gemini/settings.json, else
    /// ~/.gemini/settings.json].
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
}

/// An agent `agentwatch-ws hooks` knows.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Agent {
    /// Claude Code.
    Claude,
    /// Gemini CLI.
    Gemini,
}

impl From<Agent> for markers::HookAgent {
    fn from(a: Agent) -> Self {
        match a {
            Agent::Claude => markers::HookAgent::Claude,
            Agent::Gemini => markers::HookAgent::Gemini,
        }
    }
}

#[derive(Subcommand)]
enum HooksAction {
    /// Add our hooks (Claude Code: PermissionRequest, Notification, PostToolUse,
    /// UserPromptSubmit, Stop, SessionEnd; Gemini CLI: Notification, AfterTool, BeforeAgent,
    /// AfterAgent, SessionEnd, and hooksConfig.enabled = true); other hooks and keys are kept. Idempotent; backs the file up to
    /// <FILE>.agentwatch-ws.bak before its first change.
    Install {
        #[command(flatten)]
        settings: SettingsFile,
        #[command(flatten)]
        dir: MarkerDir,
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove our hooks (only ours).
    Uninstall {
        #[command(flatten)]
        settings: SettingsFile,
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Say whether our hooks are installed (exit 0 installed, 1 not or partly, 2 unreadable).
    Status {
        #[command(flatten)]
        settings: SettingsFile,
    },
}

fn main() -> ExitCode {
    // Not `Cli::parse()`: clap exits 2 on a usage error, and a hook that exits 2 blocks
    // Claude Code's event.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Dashboard { args } => {
            dashboard::run(std::iter::once("agentwatch-ws dashboard".to_owned()).chain(args))
        }
        Command::Hook { dir } => run_hook(dir),
        Command::Hooks { action } => run_hooks(action),
    }
}

fn fail(code: u8, why: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "agentwatch-ws: {why}");
    ExitCode::from(code)
}

fn marker_dir(dir: MarkerDir) -> Option<PathBuf> {
    dir.marker_dir.or_else(markers::default_marker_dir)
}

fn run_hook(dir: MarkerDir) -> ExitCode {
    // Exit code 1 for every failure: 2 would block Claude Code's event.
    let Some(dir) = marker_dir(dir) else {
        return fail(1, "no marker directory: set HOME or pass --marker-dir");
    };
    let bytes = match hooks::read_hook_input(std::io::stdin().lock()) {
        Ok(b) => b,
        Err(e) => return fail(1, e),
    };
    let marker = match hooks::marker_from_hook_input(&bytes, Timestamp::now()) {
        Ok(Some(m)) => m,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => return fail(1, e),
    };
    match hooks::write_marker(&dir, &marker) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(1, format_args!("cannot write a marker: {}", e.kind())),
    }
}

fn settings_file(s: SettingsFile) -> Result<PathBuf, ExitCode> {
    let agent = markers::HookAgent::from(s.agent);
    s.settings
        .or_else(|| agent.default_settings())
        .ok_or_else(|| fail(2, "no settings file: set HOME or pass --settings"))
}

fn run_hooks(action: HooksAction) -> ExitCode {
    match action {
        HooksAction::Install {
            settings,
            dir,
            dry_run,
        } => {
            let agent = markers::HookAgent::from(settings.agent);
            let settings = match settings_file(settings) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let Some(dir) = marker_dir(dir) else {
                return fail(2, "no marker directory: set HOME or pass --marker-dir");
            };
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            let program = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => return fail(2, format_args!("cannot find this program: {e}")),
            };
            report(
                &settings,
                hooks::install_for(agent, &settings, &program, &dir, dry_run),
                dry_run,
            )
        }
        HooksAction::Uninstall { settings, dry_run } => {
            let settings = match settings_file(settings) {
                Ok(s) => s,
                Err(code) => return code,
            };
            report(&settings, hooks::uninstall(&settings, dry_run), dry_run)
        }
        HooksAction::Status { settings } => {
            let agent = markers::HookAgent::from(settings.agent);
            let again = match agent {
                markers::HookAgent::Claude => "agentwatch-ws hooks install",
                markers::HookAgent::Gemini => "agentwatch-ws hooks install --agent gemini",
            };
            let settings = match settings_file(settings) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let shown = settings.display();
            match markers::agent_hooks_status(agent, &settings) {
                HooksStatus::Installed => {
                    say!("installed in {shown}: permission prompts are detected");
                    ExitCode::SUCCESS
                }
                HooksStatus::Partial(missing) => {
                    say!(
                        "partly installed in {shown} (missing: {}): run `{again}`",
                        missing.join(", ")
                    );
                    ExitCode::from(1)
                }
                HooksStatus::NotInstalled => {
                    say!("not installed in {shown}: run `{again}`");
                    ExitCode::from(1)
                }
                HooksStatus::Unreadable(why) => fail(2, format_args!("{shown}: {why}")),
            }
        }
    }
}

fn report(settings: &Path, result: Result<Outcome, InstallError>, dry_run: bool) -> ExitCode {
    let shown = settings.display();
    let outcome = match result {
        Ok(o) => o,
        Err(e) => return fail(2, format_args!("{shown}: {e}")),
    };
    if outcome.changes.is_empty() {
        say!("{shown}: nothing to change");
        return ExitCode::SUCCESS;
    }
    for change in &outcome.changes {
        let sign = if matches!(change, Change::Remove(_)) {
            '-'
        } else {
            '+'
        };
        say!("{sign} {change}");
    }
    if dry_run {
        say!("dry run: {shown} not changed; it would read:");
        say!("{}", outcome.settings.trim_end());
    } else {
        if let Some(bak) = &outcome.backup {
            say!("backup: {}", bak.display());
        }
        say!("updated {shown}");
    }
    ExitCode::SUCCESS
}
