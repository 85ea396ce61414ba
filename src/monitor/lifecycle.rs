//! Per-session state, agentwatch's merge rules, the stale / idle / retention sweeps, and the
//! order and seq of one batch's events.
//!
//! A *batch* is one round of work of the monitor (a burst of file changes, a rescan or a
//! sweep). Its events are, each with the next seq (Go's `PollOnce` order):
//! 1. one `lifecycle` event per session transition (`discovered`, `updated`, `resumed`,
//!    `terminal`, `stale`, `removed`), at most one `updated` per session per batch;
//! 2. one `delta` with every session changed in the batch (its final state) and every
//!    removed id, if there is any;
//! 3. one `health` per source whose status changed.
//!
//! # Held turn ends
//! A report whose `waiting` is [tentative](Report::tentative) (a Claude Code text reply
//! that a tool call of the same message may still follow) does not make a `working`
//! session `waiting` at once: the session stays `working` until
//! [`turn_end_delay`](Timing::turn_end_delay) has passed since the reply's own timestamp
//! (by the log's clock, like `idle`; by the read clock when the log has no usable time)
//! with no line that changes the activity, then turns `waiting`, its `lastActivityAt`
//! still the reply's time. A reply already older than the delay when read (a log read
//! late, or at start) is `waiting` at once, and so is every stated end (`end_turn`,
//! `turn_duration`, `stop_hook_summary`, an interrupt, an API error). A session whose hooks
//! run (a hook marker was applied to it) holds a tentative end for its `Stop` hook, up to
//! [`HOOKED_TURN_END_HOLD`] (60 s).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::sources::{Counts, Report, set_if_some};
use crate::markers::{HookEvent, HookMarker};
use crate::wire::{
    Activity, Event, EventType, Health, LifecycleEvent, LifecycleEventType, LifecycleState,
    SessionState, SubagentState, Timestamp,
};

/// How many removed ids are remembered (to report `resumed` rather than `discovered` when a
/// removed session gets data again).
const REMEMBER_REMOVED: usize = 4096;

/// How many hook markers of sessions not seen yet are kept (oldest dropped first).
const MAX_PENDING_MARKERS: usize = 256;

/// A session in a wait a hook reported (a permission prompt, an ended turn) does not go
/// stale for this long after the marker: the agent is alive and waiting for the person, and
/// its `SessionEnd` hook ends it. Past it, the usual stale rule applies again.
pub(crate) const HOOK_WAIT_KEEPALIVE: Duration = Duration::from_secs(24 * 3600);

/// How long a tentative turn end of a session whose hooks run (a hook marker was applied to
/// it) is held for its `Stop` hook, the stated end, instead of
/// [`turn_end_delay`](Timing::turn_end_delay): a reply's text followed by a tool call whose
/// input streams for longer than the delay then never reads as a finished turn. Past it (a
/// `Stop` hook that did not run), the end is published as without hooks.
pub(crate) const HOOKED_TURN_END_HOLD: Duration = Duration::from_secs(60);

/// How long a tentative turn end of this session is held (zero: not at all).
fn turn_end_delay(t: &Timing, hooked: bool) -> Duration {
    if hooked && !t.turn_end_delay.is_zero() {
        HOOKED_TURN_END_HOLD.max(t.turn_end_delay)
    } else {
        t.turn_end_delay
    }
}

/// The time rules of the lifecycle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Active with no data this long → `stale` (terminal). Zero disables.
    pub(crate) stale_after: Duration,
    /// Terminal this long → `removed`.
    pub(crate) retention: Duration,
    /// `working` with no record this long → `idle`. Zero disables.
    pub(crate) idle_after: Duration,
    /// A tentative turn end is published this long after its record. Zero disables.
    pub(crate) turn_end_delay: Duration,
}

struct Entry {
    state: SessionState,
    /// When data last arrived (the stale clock).
    last_data: Instant,
    /// When the session became terminal (the retention clock).
    terminal_since: Option<Instant>,
    /// Subagents found inside the session's own log.
    inline_subagents: Vec<SubagentState>,
    /// Subagents the session's log reported finished, with when.
    finished_subagents: Vec<(String, Timestamp)>,
    /// What a hook marker said, laid over what the log says until the log answers.
    hook: Option<Overlay>,
    /// The log's own time of its latest record in a read that added messages or tool calls:
    /// a marker older than this is superseded by the log.
    log_message_at: Timestamp,
    /// The tool the log says is running.
    log_tool: String,
    /// A tentative turn end is held: the session shows `working` until the delay is over.
    held_end: bool,
    /// A hook marker was applied to this session: its hooks run, and its `Stop` hook states
    /// the end of a turn.
    hooked: bool,
}

/// A hook marker's activity, laid over the log's.
#[derive(Debug, Clone)]
struct Overlay {
    activity: Activity,
    /// The tool shown (empty: none).
    tool: String,
    /// A permission wait whose hook named no tool: the log's running tool is shown.
    fill_tool: bool,
    /// The marker's time.
    at: Timestamp,
    /// The `lastActivityAt` shown while the overlay lasts: when the wait (or the work) began.
    since: Timestamp,
    /// When the marker was read (the keep-alive clock of a wait).
    read_at: Instant,
}

impl Entry {
    /// Until when a hook-reported wait keeps the session from going stale, if it is in one.
    fn kept_alive_until(&self) -> Option<Instant> {
        self.hook
            .as_ref()
            .filter(|o| o.activity == Activity::Waiting)
            .map(|o| o.read_at + HOOK_WAIT_KEEPALIVE)
    }
}

/// What a hook event means for the session's activity.
enum HookEffect {
    /// A permission prompt: `waiting`, with the tool.
    Permission,
    /// The turn ended or the prompt sits idle: `waiting`, no tool.
    TurnEnded,
    /// The person answered or the agent went on: `working`.
    Working,
    /// The session ended.
    End,
    /// Nothing to change.
    None,
}

fn effect_of(m: &HookMarker) -> HookEffect {
    match (m.event(), m.notification_type()) {
        (HookEvent::PermissionRequest, _)
        | (HookEvent::Notification, Some("permission_prompt")) => HookEffect::Permission,
        (HookEvent::Stop, _) | (HookEvent::Notification, Some("idle_prompt")) => {
            HookEffect::TurnEnded
        }
        (HookEvent::PostToolUse | HookEvent::UserPromptSubmit, _) => HookEffect::Working,
        (HookEvent::SessionEnd, _) => HookEffect::End,
        _ => HookEffect::None,
    }
}

/// Every session the monitor tracks, and the batch being built.
pub(crate) struct Lifecycle {
    timing: Timing,
    sessions: HashMap<String, Entry>,
    removed_ids: HashSet<String>,
    removed_order: VecDeque<String>,
    /// Subagents from their own files, by parent session id (kept even before the parent is
    /// seen, and attached when it is).
    subagents: HashMap<String, Vec<SubagentState>>,
    /// Hook markers of sessions not seen yet, oldest first (bounded).
    pending_markers: VecDeque<HookMarker>,
    next_seq: u64,
    // The batch.
    transitions: Vec<LifecycleEvent>,
    /// Sessions with an event in this batch, and whether it was only `updated`.
    touched: Vec<String>,
    touched_set: HashSet<String>,
    removed: Vec<String>,
}

impl Lifecycle {
    /// No sessions; the first event gets `first_seq`.
    pub(crate) fn new(timing: Timing, first_seq: u64) -> Self {
        Lifecycle {
            timing,
            sessions: HashMap::new(),
            removed_ids: HashSet::new(),
            removed_order: VecDeque::new(),
            subagents: HashMap::new(),
            pending_markers: VecDeque::new(),
            next_seq: first_seq,
            transitions: Vec::new(),
            touched: Vec::new(),
            touched_set: HashSet::new(),
            removed: Vec::new(),
        }
    }

    /// The number of sessions tracked (active and terminal within retention).
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// A copy of every tracked session.
    pub(crate) fn sessions(&self) -> Vec<SessionState> {
        self.sessions.values().map(|e| e.state.clone()).collect()
    }

    /// Records a transition for the batch; a repeated `Updated` of a session already
    /// reported in this batch is dropped (the delta carries its final state).
    fn transition(&mut self, ev: LifecycleEvent) {
        let first = self.touched_set.insert(ev.session_id.clone());
        if first {
            self.touched.push(ev.session_id.clone());
        } else if ev.kind == LifecycleEventType::Updated {
            return;
        }
        self.transitions.push(ev);
    }

    /// Merges what a log says about a session. `delta` is the change of the file's counts
    /// since it last reported.
    pub(crate) fn apply(&mut self, source: &str, report: &Report, delta: Counts, now: Instant) {
        let id = report.session_id.as_str();
        let received = Timestamp::now();
        let known = self
            .sessions
            .get(id)
            .map(|e| e.state.lifecycle == LifecycleState::Terminal);
        let (kind, from) = match known {
            None if self.forget_removed(id) => {
                (LifecycleEventType::Resumed, LifecycleState::Terminal)
            }
            None => (LifecycleEventType::Discovered, LifecycleState::default()),
            Some(true) => (LifecycleEventType::Resumed, LifecycleState::Terminal),
            Some(false) => (LifecycleEventType::Updated, LifecycleState::Active),
        };
        // A session (re)created here starts from the file's totals: after a removal, the
        // increments since the file last reported would undercount.
        let delta = if known.is_none() {
            report.counts
        } else {
            delta
        };
        let entry = self.sessions.entry(id.to_owned()).or_insert_with(|| Entry {
            state: SessionState {
                id: id.to_owned(),
                source: source.to_owned(),
                lifecycle: LifecycleState::Active,
                ..SessionState::default()
            },
            last_data: now,
            terminal_since: None,
            inline_subagents: Vec::new(),
            finished_subagents: Vec::new(),
            hook: None,
            log_message_at: Timestamp::ZERO,
            log_tool: String::new(),
            held_end: false,
            hooked: false,
        });
        entry.last_data = now;
        entry.terminal_since = None;
        let s = &mut entry.state;
        let (was, was_at) = (s.activity.clone(), s.last_activity_at);
        s.lifecycle = LifecycleState::Active;
        s.completed_at = None;
        merge(s, report, delta, received);
        // A tentative end of a turn in progress (the session was not waiting, or a new
        // message came since it began to) is held while it is younger than the delay.
        let delay = turn_end_delay(&self.timing, entry.hooked);
        entry.held_end = report.tentative
            && s.activity == Activity::Waiting
            && (was != Activity::Waiting || s.last_activity_at > was_at)
            && !delay.is_zero()
            && since_record(s, received, Duration::ZERO) < delay;
        if entry.held_end {
            s.activity = Activity::Working;
        }
        overlay_log(entry, report, &delta, known.is_none());
        if entry.hook.is_some() {
            // A hook newer than the log says what the session does: nothing to hold.
            entry.held_end = false;
        }
        if !report.subagents.is_empty() {
            entry.inline_subagents.clone_from(&report.subagents);
        }
        if !report.finished_subagents.is_empty() {
            entry
                .finished_subagents
                .clone_from(&report.finished_subagents);
        }
        let files = self
            .subagents
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        rebuild_subagents(entry, files);
        let ev = transition_of(kind, &entry.state, from, "");
        self.transition(ev);
        if known.is_none() {
            self.apply_pending_markers(id, now);
        }
    }

    /// Applies a hook marker (see the module docs of `crate::markers` and the monitor's):
    /// a marker of a session not seen yet waits (bounded) for its log.
    pub(crate) fn hook(&mut self, marker: HookMarker, now: Instant) {
        let effect = effect_of(&marker);
        if matches!(effect, HookEffect::None) {
            return;
        }
        if matches!(effect, HookEffect::End) {
            let reason = marker.reason().unwrap_or("session ended");
            self.terminate(marker.session_id(), reason, marker.at(), now);
            return;
        }
        let Some(entry) = self.sessions.get_mut(marker.session_id()) else {
            if self.pending_markers.len() >= MAX_PENDING_MARKERS {
                self.pending_markers.pop_front();
            }
            self.pending_markers.push_back(marker);
            return;
        };
        if entry.state.lifecycle == LifecycleState::Terminal {
            return;
        }
        let at = marker.at();
        let older = |t: Timestamp| at.unix_millis() < t.unix_millis();
        if older(entry.log_message_at) || entry.hook.as_ref().is_some_and(|o| older(o.at)) {
            return;
        }
        let s = &mut entry.state;
        let fill_tool = matches!(effect, HookEffect::Permission) && marker.tool_name().is_none();
        let (activity, tool) = match effect {
            HookEffect::Permission => (
                Activity::Waiting,
                marker
                    .tool_name()
                    .map_or_else(|| entry.log_tool.clone(), str::to_owned),
            ),
            HookEffect::TurnEnded => (Activity::Waiting, String::new()),
            _ => (Activity::Working, String::new()),
        };
        // A wait that goes on (a notification about the prompt already shown) keeps the
        // time it began; anything else begins at the marker.
        let since = if activity == Activity::Waiting && s.activity == Activity::Waiting {
            s.last_activity_at
        } else {
            at
        };
        let changed =
            s.activity != activity || s.current_tool != tool || s.last_activity_at != since;
        entry.hooked = true;
        entry.held_end = false;
        s.activity = activity.clone();
        s.current_tool.clone_from(&tool);
        s.last_activity_at = since;
        entry.last_data = now;
        entry.hook = Some(Overlay {
            activity,
            tool,
            fill_tool,
            at,
            since,
            read_at: now,
        });
        if changed {
            let ev = transition_of(
                LifecycleEventType::Updated,
                &entry.state,
                LifecycleState::Active,
                "",
            );
            self.transition(ev);
        }
    }

    fn apply_pending_markers(&mut self, id: &str, now: Instant) {
        if !self.pending_markers.iter().any(|m| m.session_id() == id) {
            return;
        }
        let (mine, rest): (Vec<HookMarker>, Vec<HookMarker>) =
            std::mem::take(&mut self.pending_markers)
                .into_iter()
                .partition(|m| m.session_id() == id);
        self.pending_markers = rest.into();
        for marker in mine {
            self.hook(marker, now);
        }
    }

    /// Sets the working directory of an active session that has none (found after its
    /// log was read: a Gemini CLI project resolved by another session's directory), as an
    /// `updated` event. Nothing else changes: the session's data did not.
    pub(crate) fn fill_working_dir(&mut self, id: &str, dir: &str) {
        let Some(entry) = self.sessions.get_mut(id) else {
            return;
        };
        if entry.state.lifecycle != LifecycleState::Active || !entry.state.working_dir.is_empty() {
            return;
        }
        dir.clone_into(&mut entry.state.working_dir);
        let ev = transition_of(
            LifecycleEventType::Updated,
            &entry.state,
            LifecycleState::Active,
            "",
        );
        self.transition(ev);
    }

    /// Merges a subagent's own log into its parent session (if the parent is tracked; else
    /// it is kept until the parent appears).
    pub(crate) fn apply_subagent(&mut self, parent: &str, sub: SubagentState, now: Instant) {
        let list = self.subagents.entry(parent.to_owned()).or_default();
        match list.iter_mut().find(|s| s.id == sub.id) {
            Some(existing) => *existing = sub,
            None => list.push(sub),
        }
        let Some(entry) = self.sessions.get_mut(parent) else {
            return;
        };
        let resumed = entry.state.lifecycle == LifecycleState::Terminal;
        entry.last_data = now;
        entry.terminal_since = None;
        entry.state.lifecycle = LifecycleState::Active;
        entry.state.completed_at = None;
        entry.state.last_data_received_at = Timestamp::now();
        rebuild_subagents(entry, list);
        let ev = if resumed {
            transition_of(
                LifecycleEventType::Resumed,
                &entry.state,
                LifecycleState::Terminal,
                "",
            )
        } else {
            transition_of(
                LifecycleEventType::Updated,
                &entry.state,
                LifecycleState::Active,
                "",
            )
        };
        self.transition(ev);
    }

    /// The source says the session ended (a session-end marker).
    pub(crate) fn terminate(
        &mut self,
        id: &str,
        reason: &str,
        at: Timestamp,
        now: Instant,
    ) -> bool {
        let Some(entry) = self.sessions.get_mut(id) else {
            return false;
        };
        if entry.state.lifecycle == LifecycleState::Terminal {
            return false;
        }
        entry.hook = None;
        entry.held_end = false;
        entry.state.lifecycle = LifecycleState::Terminal;
        entry.state.activity = Activity::Terminal;
        entry.state.current_tool.clear();
        entry.state.completed_at = Some(at);
        entry.terminal_since = Some(now);
        let ev = transition_of(
            LifecycleEventType::Terminal,
            &entry.state,
            LifecycleState::Active,
            reason,
        );
        self.transition(ev);
        true
    }

    /// A sweep's change of an active session's activity (a held turn end confirmed, or a
    /// quiet session gone idle), as an `updated` transition. Neither a held end nor a hook's
    /// overlay outlives it: a held end never has an overlay (a marker clears the hold, an
    /// overlay left after a log read drops it), and an idle session is never held.
    fn swept_to(&mut self, id: &str, activity: Activity) {
        let Some(e) = self.sessions.get_mut(id) else {
            return;
        };
        e.held_end = false;
        e.hook = None;
        e.state.activity = activity;
        let ev = transition_of(
            LifecycleEventType::Updated,
            &e.state,
            LifecycleState::Active,
            "",
        );
        self.transition(ev);
    }

    /// The time-based rules: `idle`, `stale`, `removed`.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let wall = Timestamp::now();
        let t = self.timing;
        let mut idle = Vec::new();
        let mut ended = Vec::new();
        let mut stale = Vec::new();
        let mut expired = Vec::new();
        for (id, e) in &self.sessions {
            let quiet = now.saturating_duration_since(e.last_data);
            match e.state.lifecycle {
                LifecycleState::Active => {
                    let kept = e.kept_alive_until().is_some_and(|until| now < until);
                    if !t.stale_after.is_zero() && quiet >= t.stale_after && !kept {
                        stale.push(id.clone());
                    } else if e.held_end {
                        if since_record(&e.state, wall, quiet) >= turn_end_delay(&t, e.hooked) {
                            ended.push(id.clone());
                        }
                    } else if !t.idle_after.is_zero()
                        && e.state.activity == Activity::Working
                        && since_record(&e.state, wall, quiet) >= t.idle_after
                    {
                        idle.push(id.clone());
                    }
                }
                _ => {
                    if e.terminal_since
                        .is_some_and(|since| now.saturating_duration_since(since) >= t.retention)
                    {
                        expired.push(id.clone());
                    }
                }
            }
        }
        for id in ended {
            self.swept_to(&id, Activity::Waiting);
        }
        for id in idle {
            self.swept_to(&id, Activity::Idle);
        }
        for id in stale {
            if let Some(e) = self.sessions.get_mut(&id) {
                e.hook = None;
                e.state.lifecycle = LifecycleState::Terminal;
                e.state.completed_at = Some(wall);
                e.terminal_since = Some(now);
                let ev = transition_of(
                    LifecycleEventType::Stale,
                    &e.state,
                    LifecycleState::Active,
                    "no data received past stale threshold",
                );
                self.transition(ev);
            }
        }
        for id in expired {
            if let Some(e) = self.sessions.remove(&id) {
                self.subagents.remove(&id);
                self.remember_removed(&id);
                self.removed.push(id.clone());
                self.transitions.push(LifecycleEvent {
                    kind: LifecycleEventType::Removed,
                    session_id: id,
                    source: e.state.source,
                    from: LifecycleState::Terminal,
                    to: LifecycleState::default(),
                    at: wall,
                    reason: "retention window expired".to_owned(),
                });
            }
        }
    }

    /// When the next time-based rule may fire (`now` is the current time), if any session is
    /// tracked.
    pub(crate) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let t = self.timing;
        let wall = Timestamp::now();
        self.sessions
            .values()
            .filter_map(|e| match e.state.lifecycle {
                LifecycleState::Active => {
                    let stale = (!t.stale_after.is_zero()).then(|| {
                        let by_data = e.last_data + t.stale_after;
                        e.kept_alive_until()
                            .map_or(by_data, |until| by_data.max(until))
                    });
                    let quiet = now.saturating_duration_since(e.last_data);
                    let after = if e.held_end {
                        turn_end_delay(&t, e.hooked)
                    } else {
                        t.idle_after
                    };
                    let idle = (e.held_end
                        || (!t.idle_after.is_zero() && e.state.activity == Activity::Working))
                        .then(|| now + after.saturating_sub(since_record(&e.state, wall, quiet)));
                    match (stale, idle) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
                _ => e.terminal_since.map(|since| since + t.retention),
            })
            .min()
    }

    /// Ends the batch: its events in order, numbered from the next seq, followed by `health`.
    pub(crate) fn drain(&mut self, health: Vec<Health>) -> Vec<Event> {
        let mut events = Vec::with_capacity(self.transitions.len() + 1 + health.len());
        for lc in self.transitions.drain(..) {
            let mut ev = Event::lifecycle(0, lc);
            if let Some(lc) = &ev.lifecycle {
                ev.at = lc.at;
            }
            events.push(ev);
        }
        let updates: Vec<SessionState> = self
            .touched
            .drain(..)
            .filter_map(|id| self.sessions.get(&id).map(|e| e.state.clone()))
            .collect();
        self.touched_set.clear();
        let removed = std::mem::take(&mut self.removed);
        if !updates.is_empty() || !removed.is_empty() {
            events.push(Event::delta(0, updates, removed));
        }
        for h in health {
            let at = h.updated_at;
            let mut ev = Event::health(0, h);
            ev.at = at;
            events.push(ev);
        }
        for ev in &mut events {
            ev.seq = self.next_seq;
            // The builder keeps the first seq at most 2^63 - 1: out of reach in practice, and
            // saturating (never panicking) beyond.
            self.next_seq = self.next_seq.saturating_add(1);
        }
        debug_assert!(events.iter().all(|e| e.kind != EventType::Snapshot));
        events
    }

    fn forget_removed(&mut self, id: &str) -> bool {
        if self.removed_ids.remove(id) {
            self.removed_order.retain(|r| r != id);
            true
        } else {
            false
        }
    }

    fn remember_removed(&mut self, id: &str) {
        if self.removed_ids.insert(id.to_owned()) {
            self.removed_order.push_back(id.to_owned());
            if self.removed_order.len() > REMEMBER_REMOVED {
                if let Some(old) = self.removed_order.pop_front() {
                    self.removed_ids.remove(&old);
                }
            }
        }
    }
}

/// How long since the session's last record: by the log's own clock when it has one, else
/// since data last arrived.
fn since_record(s: &SessionState, wall: Timestamp, quiet: Duration) -> Duration {
    if s.last_activity_at.is_zero() {
        return quiet;
    }
    let ms = wall.unix_millis() - s.last_activity_at.unix_millis();
    // A record from the future (clock skew) counts as now; then the read clock decides.
    u64::try_from(ms).map_or(quiet, Duration::from_millis)
}

/// The lifecycle event of a transition of `state` (now in its new lifecycle) from `from`.
fn transition_of(
    kind: LifecycleEventType,
    state: &SessionState,
    from: LifecycleState,
    reason: &str,
) -> LifecycleEvent {
    LifecycleEvent {
        kind,
        session_id: state.id.clone(),
        source: state.source.clone(),
        from,
        to: state.lifecycle.clone(),
        at: Timestamp::now(),
        reason: reason.to_owned(),
    }
}

/// Go's `applyUpdate`, with absolute counts turned into increments by the caller and
/// `currentTool` cleared when no tool runs.
fn merge(s: &mut SessionState, r: &Report, delta: Counts, received: Timestamp) {
    set_if_some(&mut s.slug, Some(&r.slug));
    set_if_some(&mut s.model, Some(&r.model));
    set_if_some(&mut s.working_dir, Some(&r.working_dir));
    set_if_some(&mut s.branch, Some(&r.branch));
    if !r.activity.is_empty() {
        s.activity.clone_from(&r.activity);
    }
    s.current_tool.clone_from(&r.current_tool);
    s.context_tokens = r.context_tokens;
    s.output_tokens = r.output_tokens;
    if r.max_context_tokens > 0 {
        s.max_context_tokens = r.max_context_tokens;
    }
    // A source's window may be smaller than what its log shows: utilisation is capped at 1.
    s.context_utilization = if s.max_context_tokens > 0 {
        (s.context_tokens as f64 / s.max_context_tokens as f64).min(1.0)
    } else {
        0.0
    };
    s.message_count += delta.messages;
    s.tool_call_count += delta.tool_calls;
    s.compaction_count += delta.compactions;
    if !r.started_at.is_zero() {
        s.started_at = r.started_at;
    }
    // Never backwards: a log read again from its start, stamped out of order, or a session
    // fed by two logs (a resumed chat) does not move lastActivityAt back; nor below startedAt.
    if r.last_activity_at > s.last_activity_at {
        s.last_activity_at = r.last_activity_at;
    }
    if s.last_activity_at < s.started_at {
        s.last_activity_at = s.started_at;
    }
    s.last_data_received_at = received;
}

/// After a log read was merged: remembers what the log says, and either ends the hook
/// overlay (the log has a new message or tool call later than the marker: the answer) or lays
/// it over the log's state again.
fn overlay_log(entry: &mut Entry, report: &Report, delta: &Counts, new: bool) {
    let grew = new || delta.messages > 0 || delta.tool_calls > 0;
    if grew && !report.last_activity_at.is_zero() {
        entry.log_message_at = report.last_activity_at;
    }
    entry.log_tool.clone_from(&report.current_tool);
    let Some(o) = &entry.hook else {
        return;
    };
    if grew && report.last_activity_at.unix_millis() > o.at.unix_millis() {
        entry.hook = None;
        return;
    }
    let s = &mut entry.state;
    s.activity.clone_from(&o.activity);
    if !(o.fill_tool && o.tool.is_empty()) {
        s.current_tool.clone_from(&o.tool);
    }
    s.last_activity_at = o.since;
}

/// The session's subagents: those in its own log, then those with files of their own, each
/// finished (terminal, no tool) if the session's log reported its result.
fn rebuild_subagents(entry: &mut Entry, files: &[SubagentState]) {
    let subs = &mut entry.state.subagents;
    subs.clear();
    subs.extend(entry.inline_subagents.iter().cloned());
    subs.extend(files.iter().cloned());
    for sub in subs.iter_mut() {
        let Some((_, at)) = entry
            .finished_subagents
            .iter()
            .find(|(id, _)| *id == sub.id)
        else {
            continue;
        };
        if sub.activity != Activity::Terminal {
            sub.activity = Activity::Terminal;
            sub.current_tool.clear();
            sub.completed_at = (*at).max(sub.last_activity_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            stale_after: Duration::from_secs(300),
            retention: Duration::from_secs(30),
            idle_after: Duration::ZERO,
            turn_end_delay: Duration::ZERO,
        }
    }

    fn report(id: &str, messages: i64) -> Report {
        Report {
            session_id: id.into(),
            model: "m".into(),
            activity: Activity::Working,
            context_tokens: 50,
            max_context_tokens: 200,
            counts: Counts {
                messages,
                ..Counts::default()
            },
            ..Report::default()
        }
    }

    fn kinds(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match &e.lifecycle {
                Some(lc) => lc.kind.to_string(),
                None => e.kind.to_string(),
            })
            .collect()
    }

    /// With hooks running for the session, a tentative end is held past `turn_end_delay` for
    /// the `Stop` hook (up to `HOOKED_TURN_END_HOLD`), which makes it `waiting` at once.
    #[test]
    fn with_hooks_a_tentative_end_waits_for_the_stop_hook() {
        let delay = Duration::from_secs(3);
        let mut lc = Lifecycle::new(
            Timing {
                turn_end_delay: delay,
                ..timing()
            },
            1,
        );
        let t0 = Instant::now();
        let activity = |lc: &Lifecycle| {
            lc.sessions()
                .into_iter()
                .find(|s| s.id == "h")
                .map(|s| s.activity)
        };
        let marker = |event: HookEvent, at: Timestamp| {
            HookMarker::new("h", event, None, None, None, at).unwrap()
        };
        // By the log's clock: the prompt 20 s ago, the reply's text 10 s ago (older than
        // `turn_end_delay`, so without hooks it would be `waiting` at once).
        let start = Timestamp::from_unix_millis(Timestamp::now().unix_millis() as i64 - 20_000);
        let later = |ms: i64| Timestamp::from_unix_millis(start.unix_millis() as i64 + ms);
        lc.apply("claude", &report("h", 1), Counts::default(), t0);
        lc.hook(marker(HookEvent::UserPromptSubmit, later(0)), t0);
        let reply = Report {
            activity: Activity::Waiting,
            tentative: true,
            last_activity_at: later(10_000),
            ..report("h", 2)
        };
        let one_message = Counts {
            messages: 1,
            ..Counts::default()
        };
        lc.apply("claude", &reply, one_message, t0);
        assert_eq!(activity(&lc), Some(Activity::Working));
        lc.sweep(t0 + delay * 4);
        assert_eq!(
            activity(&lc),
            Some(Activity::Working),
            "held past turn_end_delay for the Stop hook"
        );
        lc.hook(marker(HookEvent::Stop, later(10_200)), t0 + delay * 4);
        assert_eq!(activity(&lc), Some(Activity::Waiting), "Stop ends the turn");
        lc.drain(vec![]);
        lc.sweep(t0 + HOOKED_TURN_END_HOLD * 2);
        assert_eq!(activity(&lc), Some(Activity::Waiting));
        assert!(
            kinds(&lc.drain(vec![])).is_empty(),
            "no second transition for the same wait"
        );
    }

    /// A tentative end is held as `working` until the delay has passed since its record (by
    /// the read clock here: the report has no time), then published as `waiting`; a stated
    /// end, and a tentative one whose record is already older than the delay, are not held.
    #[test]
    fn tentative_turn_ends_are_held_for_the_delay() {
        let delay = Duration::from_secs(3);
        let mut lc = Lifecycle::new(
            Timing {
                turn_end_delay: delay,
                ..timing()
            },
            1,
        );
        let t0 = Instant::now();
        let reply = |id: &str, tentative: bool, at: Timestamp| Report {
            activity: Activity::Waiting,
            tentative,
            last_activity_at: at,
            ..report(id, 2)
        };
        let activity = |lc: &Lifecycle, id: &str| {
            lc.sessions()
                .into_iter()
                .find(|s| s.id == id)
                .map(|s| s.activity)
        };
        lc.apply("claude", &report("a", 1), Counts::default(), t0);
        lc.apply(
            "claude",
            &reply("a", true, Timestamp::ZERO),
            Counts::default(),
            t0,
        );
        assert_eq!(activity(&lc, "a"), Some(Activity::Working));
        assert_eq!(lc.next_deadline(t0), Some(t0 + delay));
        lc.drain(vec![]);
        lc.sweep(t0 + delay - Duration::from_millis(1));
        assert_eq!(activity(&lc, "a"), Some(Activity::Working));
        lc.sweep(t0 + delay);
        assert_eq!(activity(&lc, "a"), Some(Activity::Waiting));
        assert_eq!(kinds(&lc.drain(vec![])), ["updated", "delta"]);

        lc.apply("claude", &report("b", 1), Counts::default(), t0);
        lc.apply(
            "claude",
            &reply("b", false, Timestamp::ZERO),
            Counts::default(),
            t0,
        );
        assert_eq!(activity(&lc, "b"), Some(Activity::Waiting), "a stated end");
        let old = Timestamp::parse("2026-01-05T09:00:00Z").unwrap();
        lc.apply("claude", &report("c", 1), Counts::default(), t0);
        lc.apply("claude", &reply("c", true, old), Counts::default(), t0);
        assert_eq!(activity(&lc, "c"), Some(Activity::Waiting), "read late");
    }

    #[test]
    fn batch_order_seq_and_merge() {
        let mut lc = Lifecycle::new(timing(), 1);
        let t0 = Instant::now();
        lc.apply(
            "claude",
            &report("a", 2),
            Counts {
                messages: 2,
                ..Counts::default()
            },
            t0,
        );
        lc.apply(
            "claude",
            &report("a", 3),
            Counts {
                messages: 1,
                ..Counts::default()
            },
            t0,
        );
        let events = lc.drain(vec![Health::default()]);
        assert_eq!(kinds(&events), ["discovered", "delta", "health"]);
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let s = &events[1].updates[0];
        assert_eq!((s.message_count, s.context_utilization), (3, 0.25));
        // Stale, then retention, then resumed after removal.
        lc.sweep(t0 + Duration::from_secs(301));
        let events = lc.drain(vec![]);
        assert_eq!(kinds(&events), ["stale", "delta"]);
        assert_eq!(events[0].seq, 4);
        lc.sweep(t0 + Duration::from_secs(332));
        let events = lc.drain(vec![]);
        assert_eq!(kinds(&events), ["removed", "delta"]);
        assert_eq!(events[1].removed, ["a"]);
        lc.apply("claude", &report("a", 4), Counts::default(), t0);
        assert_eq!(kinds(&lc.drain(vec![])), ["resumed", "delta"]);
        assert!(lc.terminate("a", "logout", Timestamp::now(), t0));
        let events = lc.drain(vec![]);
        assert_eq!(kinds(&events), ["terminal", "delta"]);
        assert_eq!(events[0].lifecycle.as_ref().unwrap().reason, "logout");
        lc.apply("claude", &report("a", 4), Counts::default(), t0);
        assert_eq!(kinds(&lc.drain(vec![])), ["resumed", "delta"]);
        assert!(lc.drain(vec![]).is_empty());
    }

    #[test]
    fn subagents_attach_to_parent() {
        let mut lc = Lifecycle::new(timing(), 1);
        let now = Instant::now();
        let sub = SubagentState {
            id: "x".into(),
            parent_id: "p".into(),
            ..SubagentState::default()
        };
        lc.apply_subagent("p", sub, now);
        assert!(lc.drain(vec![]).is_empty(), "no session of its own");
        lc.apply("claude", &report("p", 1), Counts::default(), now);
        let events = lc.drain(vec![]);
        assert_eq!(events[1].updates[0].subagents.len(), 1);
        assert_eq!(lc.len(), 1);
    }

    #[test]
    fn last_activity_never_moves_back_and_utilisation_is_capped() {
        let mut lc = Lifecycle::new(timing(), 1);
        let now = Instant::now();
        let t = |s: &str| Timestamp::parse(s).unwrap();
        let mut r = report("a", 1);
        r.started_at = t("2026-01-01T10:00:00Z");
        r.last_activity_at = t("2026-01-01T10:05:00Z");
        r.context_tokens = 500;
        lc.apply("claude", &r, Counts::default(), now);
        // The file read again from its start: an earlier time.
        r.last_activity_at = t("2026-01-01T10:01:00Z");
        lc.apply("claude", &r, Counts::default(), now);
        let s = &lc.drain(vec![])[1].updates[0];
        assert_eq!(s.last_activity_at, t("2026-01-01T10:05:00Z"));
        assert_eq!(
            s.context_utilization, 1.0,
            "500 tokens of a 200-token window"
        );
        // A report whose last time precedes its start never gives lastActivityAt < startedAt.
        r.session_id = "b".into();
        r.started_at = t("2026-01-01T11:00:00Z");
        lc.apply("claude", &r, Counts::default(), now);
        let s = &lc.drain(vec![])[1].updates[0];
        assert_eq!(s.last_activity_at, s.started_at);
    }

    #[test]
    fn subagents_finish_from_the_parents_report() {
        let mut lc = Lifecycle::new(timing(), 1);
        let now = Instant::now();
        let done = Timestamp::parse("2026-01-01T10:00:30Z").unwrap();
        let sub = SubagentState {
            id: "x".into(),
            parent_id: "p".into(),
            activity: Activity::Working,
            current_tool: "Grep".into(),
            ..SubagentState::default()
        };
        let mut r = report("p", 1);
        r.finished_subagents = vec![("x".into(), done)];
        lc.apply("claude", &r, Counts::default(), now);
        lc.apply_subagent("p", sub, now);
        let events = lc.drain(vec![]);
        let s = &events[1].updates[0].subagents[0];
        assert_eq!(
            (s.activity.clone(), s.current_tool.as_str(), s.completed_at),
            (Activity::Terminal, "", done)
        );
    }
}
