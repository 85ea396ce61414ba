//! A simulated agentwatch monitor.
//!
//! It behaves like the real one: sessions from several sources (`claude`, `codex`, `gemini`,
//! agentwatch's source names) are discovered over time, several in the same repository; they
//! switch between working, waiting for the user (for a while: a person takes time to answer)
//! and idle, run tools, fill their context windows (and compact them), spawn subagents, end
//! (process exit, or stale), are sometimes resumed, and are removed after a retention period.
//! Each source's health degrades and recovers now and then.
//!
//! Each tick emits what one poll of the real monitor emits, in the same order: one `lifecycle`
//! event per transition, then one `delta` with every updated session and removed id, then one
//! `health` event per source whose status changed. [`super::publish_all`] numbers them.
//!
//! Randomness comes from a seeded xorshift generator, so a seed always tells the same story
//! (only the wall-clock timestamps differ).

use std::sync::Arc;
use std::time::Duration;

use agentwatch_ws::{
    Activity, Event, Health, HealthStatus, LifecycleEvent, LifecycleEventType, LifecycleState,
    SessionState, SubagentState, Timestamp,
};

use super::Output;

/// Active sessions the simulation tries to keep around.
const TARGET_ACTIVE: usize = 9;
/// Sessions the first poll finds already running.
const FIRST_POLL: usize = 7;
/// Ticks a terminal session is kept before it is removed.
const RETENTION_TICKS: u64 = 100;

/// Runs the simulation forever, publishing about `rate` events per second.
pub async fn run(output: Arc<Output>, seed: u64, rate: f64) {
    let mut sim = Sim::new(seed);
    let mut next = tokio::time::Instant::now();
    loop {
        let events = sim.tick(Timestamp::now());
        let n = events.len().max(1);
        super::publish_all(&output, events);
        next += Duration::from_secs_f64(n as f64 / rate);
        let now = tokio::time::Instant::now();
        if next < now.checked_sub(Duration::from_secs(1)).unwrap_or(now) {
            next = now; // fell far behind (suspended?): don't burst to catch up
        }
        tokio::time::sleep_until(next).await;
    }
}

/// xorshift64* — small, fast, deterministic; plenty for a demo.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that small seeds give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Uniform in `[lo, hi]`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

/// What differs between agent sources.
struct Profile {
    source: &'static str,
    /// Model names with their context window.
    models: &'static [(&'static str, i64)],
    tools: &'static [&'static str],
    /// Whether the agent runs subagents, and the tool that starts one.
    subagent_tool: Option<&'static str>,
    errors: &'static [&'static str],
}

const PROFILES: [Profile; 3] = [
    Profile {
        source: "claude",
        models: &[
            ("claude-opus-4-1", 200_000),
            ("claude-sonnet-4-5", 200_000),
            ("claude-haiku-4-5", 200_000),
        ],
        tools: &[
            "Bash",
            "Edit",
            "Read",
            "Read",
            "Grep",
            "Glob",
            "Write",
            "MultiEdit",
            "TodoWrite",
            "WebFetch",
            "Task",
        ],
        subagent_tool: Some("Task"),
        errors: &[
            "parse session file: unexpected end of JSON input",
            "discover: read dir ~/.claude/projects: too many open files",
        ],
    },
    Profile {
        source: "codex",
        models: &[("gpt-5-codex", 272_000), ("gpt-5", 272_000)],
        tools: &[
            "shell",
            "shell",
            "apply_patch",
            "apply_patch",
            "update_plan",
            "read_file",
        ],
        subagent_tool: None,
        errors: &[
            "parse session file: unexpected EOF",
            "open ~/.codex/sessions/rollout.jsonl: permission denied",
        ],
    },
    Profile {
        source: "gemini",
        models: &[
            ("gemini-2.5-pro", 1_048_576),
            ("gemini-2.5-flash", 1_048_576),
        ],
        tools: &[
            "run_shell_command",
            "replace",
            "read_file",
            "read_many_files",
            "write_file",
            "glob",
            "search_file_content",
            "web_fetch",
        ],
        subagent_tool: None,
        errors: &[
            "discover: context deadline exceeded",
            "parse checkpoint: invalid character '\\x00' looking for beginning of value",
        ],
    },
];

fn profile(source: &str) -> &'static Profile {
    PROFILES
        .iter()
        .find(|p| p.source == source)
        .unwrap_or(&PROFILES[0])
}

/// (repository, task slugs worked on in it). Few repositories, so that several sessions
/// share one (and sometimes a slug), as on a real machine.
const PROJECTS: &[(&str, &[&str])] = &[
    (
        "agentwatch",
        &[
            "refactor-event-bus",
            "ws-resume-support",
            "fix-stale-detection",
            "dashboard-filters",
        ],
    ),
    (
        "billing-api",
        &["add-retry-logic", "migrate-to-axum", "invoice-pdf-export"],
    ),
    (
        "web-console",
        &["dark-mode-polish", "fix-flaky-e2e", "table-virtualization"],
    ),
    ("infra", &["terraform-upgrade", "rotate-ci-secrets"]),
];

const SUBAGENT_TASKS: &[&str] = &[
    "explore-codebase",
    "write-tests",
    "review-diff",
    "search-docs",
    "find-callers",
    "run-benchmarks",
];

struct SimSession {
    state: SessionState,
    /// The tick the session became terminal.
    ended_tick: Option<u64>,
    subagents_started: u32,
}

struct SourceHealth {
    health: Health,
}

/// The simulated monitor's state.
pub struct Sim {
    rng: Rng,
    tick: u64,
    sessions: Vec<SimSession>,
    health: Vec<SourceHealth>,
    discovered: u64,
}

fn ms_before(now: Timestamp, millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(i64::try_from(now.unix_millis()).unwrap_or(0) - millis)
}

fn lifecycle(
    kind: LifecycleEventType,
    s: &SessionState,
    from: LifecycleState,
    to: LifecycleState,
    at: Timestamp,
    reason: &str,
) -> Event {
    Event::lifecycle(
        0,
        LifecycleEvent {
            kind,
            session_id: s.id.clone(),
            source: s.source.clone(),
            from,
            to,
            at,
            reason: reason.to_string(),
        },
    )
}

impl Sim {
    /// A fresh simulation; the same seed gives the same sequence of changes.
    pub fn new(seed: u64) -> Self {
        Sim {
            rng: Rng::new(seed),
            tick: 0,
            sessions: Vec::new(),
            health: PROFILES
                .iter()
                .map(|p| SourceHealth {
                    health: Health {
                        source: p.source.to_string(),
                        // Unknown until the first poll reports it.
                        status: HealthStatus::default(),
                        ..Health::default()
                    },
                })
                .collect(),
            discovered: 0,
        }
    }

    /// One poll: returns the events to publish, in order, with seq 0 (the output stamps it).
    pub fn tick(&mut self, now: Timestamp) -> Vec<Event> {
        self.tick += 1;
        let mut lifecycle_events = Vec::new();
        let mut updated: Vec<usize> = Vec::new();
        let mut removed: Vec<String> = Vec::new();

        // Terminal sessions: sometimes resumed, otherwise removed after the retention period.
        let mut i = 0;
        while i < self.sessions.len() {
            let Some(ended) = self.sessions[i].ended_tick else {
                i += 1;
                continue;
            };
            if self.tick >= ended + RETENTION_TICKS {
                let gone = self.sessions.remove(i);
                updated.retain(|&u| u != i);
                for u in &mut updated {
                    if *u > i {
                        *u -= 1;
                    }
                }
                lifecycle_events.push(lifecycle(
                    LifecycleEventType::Removed,
                    &gone.state,
                    LifecycleState::Terminal,
                    LifecycleState::Terminal,
                    now,
                    "",
                ));
                removed.push(gone.state.id);
                continue;
            }
            if self.tick > ended + 5 && self.rng.chance(0.004) {
                let s = &mut self.sessions[i];
                s.ended_tick = None;
                s.state.lifecycle = LifecycleState::Active;
                s.state.activity = Activity::Working;
                s.state.completed_at = None;
                s.state.last_activity_at = now;
                s.state.last_data_received_at = now;
                s.state.message_count += 1;
                lifecycle_events.push(lifecycle(
                    LifecycleEventType::Resumed,
                    &s.state,
                    LifecycleState::Terminal,
                    LifecycleState::Active,
                    now,
                    "new data after terminal",
                ));
                updated.push(i);
            }
            i += 1;
        }

        // Discovery: the first poll finds a few sessions already running.
        let active = self
            .sessions
            .iter()
            .filter(|s| s.ended_tick.is_none())
            .count();
        let discover = if self.tick == 1 {
            FIRST_POLL
        } else if active < 2 || (active < TARGET_ACTIVE && self.rng.chance(0.07)) {
            1
        } else {
            0
        };
        for _ in 0..discover {
            let first_poll = self.tick == 1;
            let s = self.new_session(now, first_poll);
            lifecycle_events.push(lifecycle(
                LifecycleEventType::Discovered,
                &s.state,
                LifecycleState::default(),
                LifecycleState::Active,
                now,
                "",
            ));
            self.sessions.push(s);
            updated.push(self.sessions.len() - 1);
        }

        // Activity: a couple of active sessions make progress.
        let live: Vec<usize> = (0..self.sessions.len())
            .filter(|&i| self.sessions[i].ended_tick.is_none())
            .collect();
        if !live.is_empty() {
            let steps = if self.rng.chance(0.4) { 2 } else { 1 };
            for _ in 0..steps {
                let i = *self.rng.pick(&live);
                let before = self.sessions[i].state.activity.clone();
                self.step(i, now);
                let after = self.sessions[i].state.activity.clone();
                if before != after && self.rng.chance(0.3) {
                    lifecycle_events.push(lifecycle(
                        LifecycleEventType::Updated,
                        &self.sessions[i].state,
                        LifecycleState::Active,
                        LifecycleState::Active,
                        now,
                        "",
                    ));
                }
                if !updated.contains(&i) {
                    updated.push(i);
                }
            }
        }

        // Endings: a process exits, or a session goes quiet and is marked stale.
        for &i in &live {
            if self.tick < 20 || !self.rng.chance(0.0015) {
                continue;
            }
            let stale = self.rng.chance(0.3);
            let s = &mut self.sessions[i];
            s.ended_tick = Some(self.tick);
            s.state.activity = Activity::Terminal;
            s.state.lifecycle = LifecycleState::Terminal;
            s.state.current_tool.clear();
            s.state.completed_at = Some(now);
            for sub in &mut s.state.subagents {
                if sub.completed_at.is_zero() {
                    sub.activity = Activity::Terminal;
                    sub.current_tool.clear();
                    sub.completed_at = now;
                }
            }
            let (kind, reason) = if stale {
                (LifecycleEventType::Stale, "no data for 10m0s")
            } else {
                (LifecycleEventType::Terminal, "process exited")
            };
            lifecycle_events.push(lifecycle(
                kind,
                &s.state,
                LifecycleState::Active,
                LifecycleState::Terminal,
                now,
                reason,
            ));
            if !updated.contains(&i) {
                updated.push(i);
            }
        }

        // Health: report every source on the first poll, then only changes.
        let mut health_events = Vec::new();
        for h in 0..self.health.len() {
            if let Some(health) = self.step_health(h, now) {
                health_events.push(Event::health(0, health));
            }
        }

        let mut events = lifecycle_events;
        if !updated.is_empty() || !removed.is_empty() {
            let updates = updated
                .iter()
                .map(|&i| self.sessions[i].state.clone())
                .collect();
            events.push(Event::delta(0, updates, removed));
        }
        events.extend(health_events);
        events
    }

    fn new_session(&mut self, now: Timestamp, already_running: bool) -> SimSession {
        self.discovered += 1;
        let profile = &PROFILES[self.rng.next_u64() as usize % PROFILES.len()];
        let &(model, max) = self.rng.pick(profile.models);
        let &(repo, slugs) = self.rng.pick(PROJECTS);
        let slug = *self.rng.pick(slugs);
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            self.rng.next_u64() as u32,
            self.rng.next_u64() as u16,
            self.rng.next_u64() & 0xfff,
            (self.rng.next_u64() & 0x3fff) | 0x8000,
            self.rng.next_u64() & 0xffff_ffff_ffff
        );
        let branch = if self.rng.chance(0.25) {
            "main".to_string()
        } else {
            format!("feature/{slug}")
        };
        let mut state = SessionState {
            id,
            source: profile.source.to_string(),
            slug: if self.rng.chance(0.9) {
                slug.to_string()
            } else {
                String::new()
            },
            activity: Activity::Working,
            lifecycle: LifecycleState::Active,
            max_context_tokens: max,
            model: model.to_string(),
            working_dir: format!("/home/dev/src/{repo}"),
            branch,
            token_estimated: profile.source == "codex" && self.rng.chance(0.5),
            started_at: now,
            last_activity_at: now,
            last_data_received_at: now,
            ..SessionState::default()
        };
        if already_running {
            let minutes = self.rng.range(3, 95);
            state.started_at = ms_before(now, minutes * 60_000 + self.rng.range(0, 59_999));
            state.context_tokens = max * self.rng.range(8, 70) / 100;
            state.message_count = minutes * self.rng.range(2, 5);
            state.tool_call_count = state.message_count * self.rng.range(30, 60) / 100;
            state.compaction_count = if minutes > 60 {
                self.rng.range(0, 2)
            } else {
                0
            };
            state.activity = self
                .rng
                .pick(&[Activity::Working, Activity::Idle, Activity::Waiting])
                .clone();
            if state.activity != Activity::Working {
                // Waiting or idle since a while: the page shows the longest wait first.
                state.last_activity_at = ms_before(now, self.rng.range(20, 900) * 1000);
                state.last_data_received_at = state.last_activity_at;
            }
        } else {
            state.context_tokens = self.rng.range(9_000, 22_000); // system prompt + first read
            state.message_count = 1;
        }
        state.output_tokens = state.context_tokens / 9;
        if state.activity == Activity::Working {
            state.current_tool = self.rng.pick(profile.tools).to_string();
        }
        state.context_utilization = state.context_tokens as f64 / max as f64;
        SimSession {
            state,
            ended_tick: None,
            subagents_started: 0,
        }
    }

    /// One step of progress for an active session.
    fn step(&mut self, i: usize, now: Timestamp) {
        let rng = &mut self.rng;
        let sim = &mut self.sessions[i];
        let s = &mut sim.state;
        let profile = profile(&s.source);
        let r = rng.f64();
        let before = s.activity.clone();
        s.activity = match s.activity {
            Activity::Working if r < 0.15 => Activity::Waiting,
            Activity::Working if r < 0.25 => Activity::Idle,
            // A person takes a while to answer: waiting lasts.
            Activity::Waiting if r < 0.15 => Activity::Working,
            Activity::Idle if r < 0.40 => Activity::Working,
            Activity::Working | Activity::Waiting | Activity::Idle => s.activity.clone(),
            _ => Activity::Working,
        };
        if s.activity != Activity::Working && s.activity == before {
            // Still waiting or idle: nothing happened, the log got no new record.
            return;
        }
        match s.activity {
            Activity::Working => {
                s.current_tool = if rng.chance(0.12) {
                    String::new() // thinking / writing a reply
                } else {
                    rng.pick(profile.tools).to_string()
                };
                s.message_count += rng.range(1, 3);
                if !s.current_tool.is_empty() {
                    s.tool_call_count += 1;
                }
                let scale = (s.max_context_tokens / 200_000).clamp(1, 3);
                let growth = rng.range(800, 4_000) * scale;
                s.context_tokens += growth;
                s.output_tokens += growth / rng.range(6, 12);
            }
            Activity::Waiting => {
                // Waiting for the user: usually a permission prompt for the current tool.
                if s.current_tool.is_empty() {
                    s.current_tool = rng.pick(profile.tools).to_string();
                }
            }
            _ => s.current_tool.clear(),
        }
        if s.context_tokens as f64 >= s.max_context_tokens as f64 * 0.92 {
            // Auto-compaction.
            s.context_tokens = s.max_context_tokens * rng.range(22, 34) / 100;
            s.compaction_count += 1;
        }
        s.context_utilization = s.context_tokens as f64 / s.max_context_tokens as f64;
        s.last_activity_at = now;
        s.last_data_received_at = now;

        // Subagents run while the parent works; new ones are started by the subagent tool.
        for sub in s
            .subagents
            .iter_mut()
            .filter(|sub| sub.completed_at.is_zero())
        {
            if rng.chance(0.07) {
                sub.activity = Activity::Terminal;
                sub.current_tool.clear();
                sub.completed_at = now;
            } else {
                sub.activity = Activity::Working;
                sub.current_tool = rng
                    .pick(&["Read", "Grep", "Glob", "Bash", "Edit"])
                    .to_string();
                sub.message_count += rng.range(1, 3);
                sub.tool_call_count += 1;
                sub.context_tokens += rng.range(800, 4_000);
                sub.output_tokens += rng.range(50, 400);
            }
            sub.last_activity_at = now;
        }
        let running = s
            .subagents
            .iter()
            .filter(|sub| sub.completed_at.is_zero())
            .count();
        if profile.subagent_tool.is_some_and(|t| t == s.current_tool) && running < 2 {
            sim.subagents_started += 1;
            s.subagents.push(SubagentState {
                id: format!("{}-sub-{:02}", &s.id[..8], sim.subagents_started),
                parent_id: s.id.clone(),
                slug: rng.pick(SUBAGENT_TASKS).to_string(),
                activity: Activity::Working,
                current_tool: "Read".to_string(),
                started_at: now,
                last_activity_at: now,
                model: "claude-haiku-4-5".to_string(),
                context_tokens: rng.range(6_000, 12_000),
                message_count: 1,
                ..SubagentState::default()
            });
        }
        // Keep the most recent few finished subagents.
        while s.subagents.len() > 4 {
            match s
                .subagents
                .iter()
                .position(|sub| !sub.completed_at.is_zero())
            {
                Some(oldest_done) => {
                    s.subagents.remove(oldest_done);
                }
                None => break,
            }
        }
    }

    /// Moves one source's health along; returns it when its status changed.
    fn step_health(&mut self, h: usize, now: Timestamp) -> Option<Health> {
        let rng = &mut self.rng;
        let errors = PROFILES[h].errors;
        let health = &mut self.health[h].health;
        let r = rng.f64();
        let next = match health.status {
            HealthStatus::Healthy if r < 0.006 => HealthStatus::Degraded,
            HealthStatus::Degraded if r < 0.06 => HealthStatus::Healthy,
            HealthStatus::Degraded if r < 0.08 => HealthStatus::Failed,
            HealthStatus::Failed if r < 0.05 => HealthStatus::Degraded,
            HealthStatus::Failed if r < 0.08 => HealthStatus::Healthy,
            HealthStatus::Healthy | HealthStatus::Degraded | HealthStatus::Failed => return None,
            _ => HealthStatus::Healthy, // first poll
        };
        match next {
            HealthStatus::Healthy => {
                health.discover_failures = 0;
                health.parse_failures = 0;
                health.last_error.clear();
            }
            _ => {
                let error = *rng.pick(errors);
                if error.starts_with("parse") {
                    health.parse_failures += rng.range(1, 3);
                } else {
                    health.discover_failures += rng.range(1, 3);
                }
                health.last_error = error.to_string();
            }
        }
        health.status = next;
        health.updated_at = now;
        Some(health.clone())
    }
}

/// Optional fields of `POST /debug/sessions` (query parameters, all text), for tests that
/// need a session in a chosen state. Anything absent or unparsable keeps the default.
#[derive(Debug, Default, serde::Deserialize)]
pub struct InjectOptions {
    /// `slug`; default: the id; empty: none.
    pub slug: Option<String>,
    /// `working` (default), `waiting`, `idle` or `terminal`.
    pub activity: Option<String>,
    /// Seconds since the last activity (default 0).
    pub idle_secs: Option<String>,
    /// Working directory; default `/tmp/injected`.
    pub dir: Option<String>,
    /// Branch; default `debug/inject`.
    pub branch: Option<String>,
    /// Context tokens; default 12 345.
    pub tokens: Option<String>,
    /// Output tokens; default 321.
    pub output: Option<String>,
    /// `currentTool`; default: the source's first tool while working, else none. With
    /// `activity=waiting` a tool is a permission prompt.
    pub tool: Option<String>,
    /// `lastActivityAt` as Unix milliseconds (instead of `idle_secs`): a wait injected
    /// twice with the same `at_ms` is the same wait.
    pub at_ms: Option<String>,
    /// `messageCount`; default 1.
    pub messages: Option<String>,
    /// `machine`: the producer the session comes from, as a broker node serving several
    /// producers labels it; default none (omitted, as for a single producer).
    pub machine: Option<String>,
}

/// The session `POST /debug/sessions` publishes: by default a fresh, working session with
/// that id; `opts` chooses its name, activity, age and repository.
pub fn injected_session(id: &str, source: &str, opts: &InjectOptions) -> SessionState {
    let now = Timestamp::now();
    let profile = profile(source);
    let (model, max) = profile.models[0];
    let text = |v: &Option<String>, default: &str| {
        v.clone()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let number = |v: &Option<String>, default: i64| {
        v.as_deref()
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|n| (0..=1_000_000_000_000).contains(n))
            .unwrap_or(default)
    };
    let tokens = number(&opts.tokens, 12_345);
    let activity = Activity::from(text(&opts.activity, "working").as_str());
    let terminal = activity == Activity::Terminal;
    let last_activity = match opts.at_ms.as_deref().and_then(|v| v.parse::<i64>().ok()) {
        Some(ms) if ms > 0 => Timestamp::from_unix_millis(ms),
        _ => ms_before(now, number(&opts.idle_secs, 0).min(86_400 * 365) * 1000),
    };
    SessionState {
        id: id.to_string(),
        source: source.to_string(),
        // `slug=` (empty) gives a session without a slug, named by its repository.
        slug: opts.slug.clone().unwrap_or_else(|| id.to_string()),
        lifecycle: if terminal {
            LifecycleState::Terminal
        } else {
            LifecycleState::Active
        },
        context_tokens: tokens,
        output_tokens: number(&opts.output, 321),
        max_context_tokens: max,
        context_utilization: tokens as f64 / max as f64,
        model: model.to_string(),
        working_dir: text(&opts.dir, "/tmp/injected"),
        branch: text(&opts.branch, "debug/inject"),
        current_tool: match &opts.tool {
            Some(tool) => tool.clone(),
            None if activity == Activity::Working => profile.tools[0].to_string(),
            None => String::new(),
        },
        activity,
        message_count: number(&opts.messages, 1),
        tool_call_count: 1,
        started_at: ms_before(last_activity, 60_000),
        last_activity_at: last_activity,
        last_data_received_at: now,
        completed_at: terminal.then_some(last_activity),
        machine: opts.machine.clone().unwrap_or_default(),
        ..SessionState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_story() {
        let now = Timestamp::from_unix_millis(1_741_944_413_000);
        let run = |seed| {
            let mut sim = Sim::new(seed);
            (0..500)
                .flat_map(|_| sim.tick(now))
                .map(|e| (e.kind, e.updates.len(), e.removed.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
