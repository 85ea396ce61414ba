//! The NATS JetStream engine: [`NatsBroker`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{self, DirectGetErrorKind, DiscardPolicy, StorageType};
use async_nats::jetstream::{self as js, Context};
use bytes::Bytes;
use tokio::sync::Mutex;

use super::{Append, Appended, Broker, BrokerError, Checkpoint, Claim, Entry, EntryId, Record};

/// Default retention of the stream: JetStream keeps the last this many entries.
pub(crate) const DEFAULT_MAX_LEN: usize = 10_000;
/// How long one request may take (beyond a read's own blocking time).
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest [`NatsBroker::response_timeout`]: one hour.
const MAX_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3600);
/// The first line of a checkpoint value: the format's version.
const CHECKPOINT_MAGIC: &str = "agentwatch-checkpoint-2";

/// Header: the machine the entry comes from.
const MACHINE: &str = "Agentwatch-Machine";
/// Header: `1` on a gone entry.
const GONE: &str = "Agentwatch-Gone";
/// Header: the id of the entry before it in the stream (empty for the first).
const PREV: &str = "Agentwatch-Prev";
/// Header, only on a resync: the length of the event in the payload; the health list follows it.
const EVENT_LEN: &str = "Agentwatch-Event-Len";
/// Header: the message's `Nats-Msg-Id` again (the server does not hand that one back).
const ID: &str = "Agentwatch-Id";
/// JetStream's idempotency header.
const MSG_ID: &str = "Nats-Msg-Id";
/// JetStream's optimistic-concurrency header: the stream's last sequence must be this.
const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
/// The same for the last message on the message's subject.
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// How many times an append tries again when another producer appended first.
const CONTENDED_TRIES: usize = 64;

/// [`Broker`] on NATS JetStream (nats-server ≥ 2.9 with JetStream enabled).
///
/// For the stream key `K` (e.g. `agentwatch:events`) it uses, with `N` the key with every
/// character other than ASCII letters, digits, `-` and `_` replaced by `_`, and `H` a machine
/// name in lowercase hex:
/// - the JetStream stream `N` on the subjects `agentwatch.N.entries.>` (file storage, the
///   last [`max_len`](NatsBroker::max_len) messages kept, direct gets allowed), created when
///   a producer first appends. Each entry is one message on its machine's subject
///   `agentwatch.N.entries.H`: headers `Agentwatch-Prev` (the id of the entry before it),
///   `Agentwatch-Machine`, `Agentwatch-Gone` (`1` on a gone entry) and, on a resync,
///   `Agentwatch-Event-Len`; the payload is the event's Go-exact JSON (followed, on a resync,
///   by the health list). An entry's `seq` is its stream sequence, assigned once by the
///   server. `Agentwatch-Id` repeats the message's `Nats-Msg-Id`; an entry's id is
///   `<stream sequence>-<Agentwatch-Id>`: unique even when a restored stream hands out the
///   same sequence numbers again.
/// - the JetStream stream `N-checkpoint` on the subjects `agentwatch.N.checkpoint.>` and
///   `agentwatch.N.alive.>`, keeping one message per subject: each machine's [`Checkpoint`]
///   on `agentwatch.N.checkpoint.H`, and its claim on `agentwatch.N.alive.H` (`live
///   <instance>`, renewed by publishing it again; `gone` once a node marked the machine
///   gone; `unclaimed` when a node found none, starting the machine's clock; its age is the
///   server's timestamp of that message against this host's clock, so keep clocks in
///   sync).
///
/// # Appends
/// Each message of a batch carries `Nats-Msg-Id` `<batch>/<i>` (so a retried batch is
/// deduplicated by the server within its two-minute window, and returns the same id),
/// `Nats-Expected-Last-Sequence` (the stream's last sequence, so that its `Agentwatch-Prev`
/// is exact; when another producer appended first, the append reads the new end and tries
/// again) and, continuing the producer's entries, `Nats-Expected-Last-Subject-Sequence` (its
/// machine's last entry), so that a stream that no longer holds the producer's last entry as
/// its machine's last is refused ([`BrokerError::StreamLost`]). A batch is not atomic as a
/// whole (a reader may see its first messages before the rest), which the contract allows:
/// every message is chained.
///
/// # Reads
/// A read fetches messages one by one with JetStream's direct get (`next_by_subj` from a
/// sequence, so trimmed sequences are skipped) and, when there is nothing new, waits for a
/// message on the subject through a core NATS subscription for up to the read's `block`.
/// Give each [`Follower`](super::Follower) its own `NatsBroker` (the follower asks for a
/// second one for resuming clients through [`Broker::handle`]).
///
/// ```no_run
/// use agentwatch_ws::broker::NatsBroker;
///
/// let broker = NatsBroker::open("nats://127.0.0.1:4222", "agentwatch:events")?
///     .max_len(10_000);
/// assert_eq!(broker.stream_name(), "agentwatch_events");
/// # Ok::<(), agentwatch_ws::broker::BrokerError>(())
/// ```
pub struct NatsBroker {
    url: String,
    stream: String,
    subject: String,
    checkpoint_stream: String,
    checkpoint_subject: String,
    max_len: usize,
    response_timeout: Duration,
    conn: Mutex<Option<Connection>>,
    /// The stream's end as this handle last saw it (`(sequence, entry id)`): an append's
    /// first guess, refreshed when another producer appended first.
    tail: std::sync::Mutex<Option<(u64, EntryId)>>,
    /// The stream is known to exist: appends skip creating it, reads asking whether it does.
    created: AtomicBool,
    /// Wakes a blocking read: every message on the subject, through core NATS.
    wake: Mutex<Option<async_nats::Subscriber>>,
}

#[derive(Clone)]
struct Connection {
    client: async_nats::Client,
    jetstream: Context,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .finish()
    }
}

/// `key` as a JetStream name: ASCII letters, digits, `-` and `_`, the rest replaced by `_`.
fn name_of(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl NatsBroker {
    /// A broker on the server at `url` (`nats://host:port`; `user:password@` and `tls://`
    /// as async-nats reads them) and the stream key `stream`. Does not connect yet.
    ///
    /// # Errors
    /// [`BrokerError::Malformed`] when `stream` has no character usable in a JetStream name.
    pub fn open(url: &str, stream: impl Into<String>) -> Result<Self, BrokerError> {
        let key = stream.into();
        let name = name_of(&key);
        if name.trim_matches('_').is_empty() {
            return Err(BrokerError::Malformed(
                "nats stream key: no letter or digit".into(),
            ));
        }
        Ok(NatsBroker {
            url: url.to_owned(),
            subject: format!("agentwatch.{name}.entries"),
            checkpoint_stream: format!("{name}-checkpoint"),
            checkpoint_subject: format!("agentwatch.{name}.checkpoint"),
            stream: name,
            max_len: DEFAULT_MAX_LEN,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            conn: Mutex::new(None),
            tail: std::sync::Mutex::new(None),
            created: AtomicBool::new(false),
            wake: Mutex::new(None),
        })
    }

    /// The retention: JetStream keeps the last this many entries (`max_msgs`, discarding the
    /// oldest). Default 10 000; 0 is raised to 1, with a `warn`. Applied when the stream is
    /// created.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = crate::layer::bounded("broker.max_len", max_len, 1, usize::MAX);
        self
    }

    /// How long a request may take (beyond a read's blocking time) before the operation fails
    /// as [`BrokerError::Unavailable`]. Default 2 s; from 1 ms to 1 hour (values outside are
    /// raised or lowered, with a `warn`).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = crate::layer::bounded(
            "broker.response_timeout",
            timeout,
            Duration::from_millis(1),
            MAX_RESPONSE_TIMEOUT,
        );
        self
    }

    /// The JetStream stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// The subject prefix the entries are published under: `agentwatch.<stream name>.entries`
    /// (each machine's on `<prefix>.<machine in hex>`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject of `machine`'s entries.
    pub fn machine_subject(&self, machine: &str) -> String {
        format!("{}.{}", self.subject, hex(machine))
    }

    fn entries_filter(&self) -> String {
        format!("{}.>", self.subject)
    }

    fn checkpoint_subject_of(&self, machine: &str) -> String {
        format!("{}.{}", self.checkpoint_subject, hex(machine))
    }

    fn alive_prefix(&self) -> String {
        self.checkpoint_subject
            .strip_suffix(".checkpoint")
            .map_or_else(
                || format!("{}.alive", self.checkpoint_subject),
                |base| format!("{base}.alive"),
            )
    }

    fn alive_subject(&self, machine: &str) -> String {
        format!("{}.{}", self.alive_prefix(), hex(machine))
    }

    /// The checkpoint's stream: `<stream name>-checkpoint`.
    pub fn checkpoint_stream(&self) -> &str {
        &self.checkpoint_stream
    }

    /// The connection, opened if needed.
    async fn connection(&self) -> Result<Connection, BrokerError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = &*slot {
            return Ok(conn.clone());
        }
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(self.response_timeout)
            .request_timeout(Some(self.response_timeout));
        let client = tokio::time::timeout(self.response_timeout, options.connect(&self.url))
            .await
            .map_err(|_| BrokerError::Unavailable("no answer in time".into()))?
            .map_err(unavailable)?;
        let jetstream = js::new(client.clone());
        let conn = Connection { client, jetstream };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `op` within `limit`.
    async fn timed<T, Fut>(&self, limit: Duration, op: Fut) -> Result<T, BrokerError>
    where
        Fut: Future<Output = Result<T, BrokerError>>,
    {
        tokio::time::timeout(limit, op)
            .await
            .unwrap_or_else(|_| Err(BrokerError::Unavailable("no answer in time".into())))
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.entries_filter()],
            max_messages: i64::try_from(self.max_len).unwrap_or(i64::MAX),
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// The stream, created when `create`; `None` when it does not exist.
    async fn stream(
        &self,
        conn: &Connection,
        create: bool,
    ) -> Result<Option<stream::Stream>, BrokerError> {
        if create {
            return conn
                .jetstream
                .get_or_create_stream(self.stream_config())
                .await
                .map(Some)
                .map_err(unavailable);
        }
        match conn.jetstream.get_stream(&self.stream).await {
            Ok(stream) => Ok(Some(stream)),
            Err(error) => match error.kind() {
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(unavailable(error)),
            },
        }
    }

    /// The checkpoint's stream, created if needed.
    async fn checkpoints(&self, conn: &Connection) -> Result<stream::Stream, BrokerError> {
        conn.jetstream
            .get_or_create_stream(stream::Config {
                name: self.checkpoint_stream.clone(),
                subjects: vec![
                    format!("{}.>", self.checkpoint_subject),
                    format!("{}.>", self.alive_prefix()),
                ],
                max_messages_per_subject: 1,
                discard: DiscardPolicy::Old,
                storage: StorageType::File,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(unavailable)
    }

    /// The stream's last entry id (`None`: empty or missing), and its last sequence.
    async fn last(&self, conn: &Connection) -> Result<(Option<EntryId>, u64), BrokerError> {
        let Some(mut stream) = self.stream(conn, false).await? else {
            return Ok((None, 0));
        };
        let state = stream.info().await.map_err(unavailable)?.state.clone();
        if state.messages == 0 {
            return Ok((None, state.last_sequence));
        }
        let message = stream
            .direct_get(state.last_sequence)
            .await
            .map_err(unavailable)?;
        Ok((Some(entry_id(&message)), state.last_sequence))
    }

    async fn append_now(&self, append: &Append<'_>) -> Result<Appended, BrokerError> {
        let conn = self.connection().await?;
        if !self.created.load(Ordering::Relaxed) {
            self.stream(&conn, true).await?;
            self.created.store(true, Ordering::Relaxed);
        }
        let subject = self.machine_subject(append.machine);
        // The sequence the machine's last message must have (a producer continuing its own).
        let mut subject_last = append.after.map(sequence_of).transpose()?;
        let cached = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (mut last_sequence, mut prev) = match cached {
            Some(cached) => cached,
            None => {
                let (tail, sequence) = self.last(&conn).await?;
                (sequence, tail.unwrap_or_default())
            }
        };
        let mut done = None;
        for (i, record) in append.records.iter().enumerate() {
            let msg_id = format!("{}/{i}", append.batch);
            let mut tries = 0;
            let ack = loop {
                let mut headers = HeaderMap::new();
                headers.insert(MSG_ID, msg_id.as_str());
                headers.insert(ID, msg_id.as_str());
                if last_sequence > 0 {
                    headers.insert(EXPECTED_LAST_SEQUENCE, last_sequence.to_string());
                }
                if let Some(expected) = subject_last {
                    headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string());
                }
                headers.insert(PREV, prev.as_str());
                headers.insert(MACHINE, append.machine);
                let mut payload = record.event.clone();
                if let Some(health) = &record.health {
                    headers.insert(EVENT_LEN, record.event.len().to_string());
                    payload.extend_from_slice(health);
                }
                let ack = conn
                    .jetstream
                    .publish_with_headers(subject.clone(), headers, Bytes::from(payload))
                    .await
                    .map_err(unavailable)?
                    .await;
                match ack {
                    Ok(ack) => break ack,
                    Err(error) => match error.kind() {
                        PublishErrorKind::WrongLastSequence => {
                            // Another producer appended first, or the machine's last entry
                            // is no longer this producer's: which one tells.
                            if let Some(expected) = subject_last {
                                let last = self.last_of_now(&conn, append.machine).await?;
                                if last.as_deref().map(sequence_of).transpose()? != Some(expected) {
                                    return Err(BrokerError::StreamLost);
                                }
                            }
                            tries += 1;
                            if tries >= CONTENDED_TRIES {
                                return Err(BrokerError::Unavailable(
                                    "the stream kept moving under the append".into(),
                                ));
                            }
                            let (tail, sequence) = self.last(&conn).await?;
                            prev = tail.unwrap_or_default();
                            last_sequence = sequence;
                        }
                        PublishErrorKind::StreamNotFound if append.after.is_some() => {
                            self.created.store(false, Ordering::Relaxed);
                            self.forget_tail();
                            return Err(BrokerError::StreamLost);
                        }
                        _ => {
                            // A deleted stream may answer "no responders" or nothing at
                            // all: the next attempt makes sure it exists.
                            self.created.store(false, Ordering::Relaxed);
                            self.forget_tail();
                            return Err(unavailable(error));
                        }
                    },
                }
            };
            last_sequence = ack.sequence;
            subject_last = Some(ack.sequence);
            prev = format!("{}-{msg_id}", ack.sequence);
            *self
                .tail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((last_sequence, prev.clone()));
            done = Some(Appended {
                entry: prev.clone(),
                seq: ack.sequence,
            });
        }
        done.ok_or_else(|| malformed("an append of no records"))
    }

    /// The last message of every subject matching `filter` in `stream` (one message per
    /// subject: the checkpoint stream), in stream order.
    async fn every_last(
        &self,
        stream: &stream::Stream,
        filter: String,
    ) -> Result<Vec<StreamMessage>, BrokerError> {
        let mut found = Vec::new();
        let mut from = 1;
        loop {
            match stream
                .direct_get_next_for_subject(filter.clone(), Some(from))
                .await
            {
                Ok(message) => {
                    from = message.sequence.saturating_add(1);
                    found.push(message);
                }
                Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => {
                    return Ok(found);
                }
                Err(error) => return Err(unavailable(error)),
            }
        }
    }

    fn forget_tail(&self) {
        *self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The id of `machine`'s last entry.
    async fn last_of_now(
        &self,
        conn: &Connection,
        machine: &str,
    ) -> Result<Option<EntryId>, BrokerError> {
        let Some(stream) = self.stream(conn, false).await? else {
            return Ok(None);
        };
        match stream
            .direct_get_last_for_subject(self.machine_subject(machine))
            .await
        {
            Ok(message) => Ok(Some(entry_id(&message))),
            Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// The claim on `machine`: its message sequence, what it says and its age. `None`: no
    /// claim message at all.
    async fn alive(
        &self,
        checkpoints: &stream::Stream,
        machine: &str,
    ) -> Result<Option<(u64, Alive, Duration)>, BrokerError> {
        match checkpoints
            .direct_get_last_for_subject(self.alive_subject(machine))
            .await
        {
            Ok(message) => {
                let text = std::str::from_utf8(&message.payload).unwrap_or("");
                let alive = match text.strip_prefix("live ") {
                    Some(instance) => Alive::Live(instance.to_owned()),
                    None if text == "gone" => Alive::Gone,
                    None => Alive::Unclaimed,
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                let age = now
                    .saturating_sub(message.time.unix_timestamp_nanos())
                    .max(0);
                let age = Duration::from_nanos(u64::try_from(age).unwrap_or(u64::MAX));
                Ok(Some((message.sequence, alive, age)))
            }
            Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Publishes `payload` as `machine`'s claim if its last claim message is still `expected`
    /// (0: none). `Ok(None)` when another got there first.
    async fn publish_alive(
        &self,
        conn: &Connection,
        machine: &str,
        expected: u64,
        payload: String,
    ) -> Result<Option<u64>, BrokerError> {
        let mut headers = HeaderMap::new();
        headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string());
        let ack = conn
            .jetstream
            .publish_with_headers(self.alive_subject(machine), headers, Bytes::from(payload))
            .await
            .map_err(unavailable)?
            .await;
        match ack {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(error) if matches!(error.kind(), PublishErrorKind::WrongLastSequence) => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn claim_now(
        &self,
        machine: &str,
        instance: &str,
        stale_after: Duration,
    ) -> Result<Claim, BrokerError> {
        let conn = self.connection().await?;
        let checkpoints = self.checkpoints(&conn).await?;
        for _ in 0..CONTENDED_TRIES {
            let found = self.alive(&checkpoints, machine).await?;
            let (expected, claim) = match &found {
                None => (0, Claim::Taken),
                Some((sequence, Alive::Live(holder), _)) if holder == instance => {
                    (*sequence, Claim::Held)
                }
                Some((_, Alive::Live(_), age)) if *age < stale_after => {
                    return Err(BrokerError::NameTaken {
                        machine: machine.to_owned(),
                        age: *age,
                    });
                }
                Some((sequence, _, _)) => (*sequence, Claim::Taken),
            };
            if self
                .publish_alive(&conn, machine, expected, format!("live {instance}"))
                .await?
                .is_some()
            {
                return Ok(claim);
            }
        }
        Err(BrokerError::Unavailable(
            "the claim kept changing under this producer".into(),
        ))
    }

    async fn mark_gone_now(
        &self,
        machine: &str,
        stale_after: Duration,
        tail: Option<&str>,
        record: &Record,
    ) -> Result<Option<Appended>, BrokerError> {
        let conn = self.connection().await?;
        let checkpoints = self.checkpoints(&conn).await?;
        let gone_at = match self.alive(&checkpoints, machine).await? {
            // No claim at all (lost with the broker's data, or never made): the clock
            // starts now.
            None => {
                self.publish_alive(&conn, machine, 0, "unclaimed".to_owned())
                    .await?;
                return Ok(None);
            }
            Some((_, Alive::Live(_) | Alive::Unclaimed, age)) if age < stale_after => {
                return Ok(None);
            }
            // Marked gone on the claim by a node that has not appended the entry (yet).
            Some((sequence, Alive::Gone, _)) => sequence,
            Some((expected, _, _)) => {
                match self
                    .publish_alive(&conn, machine, expected, "gone".to_owned())
                    .await?
                {
                    Some(sequence) => sequence,
                    None => return Ok(None),
                }
            }
        };
        // Without a position (a producer leaving), after whatever the stream ends with.
        let (tail, tail_sequence) = match tail {
            Some(tail) => (tail.to_owned(), sequence_of(tail)?),
            None => {
                let (tail, sequence) = self.last(&conn).await?;
                (tail.unwrap_or_default(), sequence)
            }
        };
        let msg_id = format!("gone/{}/{gone_at}", hex(machine));
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID, msg_id.as_str());
        headers.insert(ID, msg_id.as_str());
        if tail_sequence > 0 {
            headers.insert(EXPECTED_LAST_SEQUENCE, tail_sequence.to_string());
        }
        headers.insert(PREV, tail.as_str());
        headers.insert(MACHINE, machine);
        headers.insert(GONE, "1");
        let ack = conn
            .jetstream
            .publish_with_headers(
                self.machine_subject(machine),
                headers,
                Bytes::from(record.event.clone()),
            )
            .await
            .map_err(unavailable)?
            .await;
        match ack {
            Ok(ack) if ack.duplicate => Ok(None),
            Ok(ack) => Ok(Some(Appended {
                entry: format!("{}-{msg_id}", ack.sequence),
                seq: ack.sequence,
            })),
            Err(error) if matches!(error.kind(), PublishErrorKind::WrongLastSequence) => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn read_now(
        &self,
        after: Option<&str>,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, BrokerError> {
        let conn = self.connection().await?;
        let after_sequence = after.map(sequence_of).transpose()?;
        let mut from = after_sequence.map_or(1, |sequence| sequence.saturating_add(1));
        let mut rewound = false;
        let deadline = block.map(|block| tokio::time::Instant::now() + block);
        let mut wake = self.wake.lock().await;
        if block.is_some() && wake.is_none() {
            *wake = Some(
                conn.client
                    .subscribe(self.entries_filter())
                    .await
                    .map_err(unavailable)?,
            );
        }
        loop {
            // Wake-ups that arrived before this look are covered by it.
            if let Some(wake) = wake.as_mut() {
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::ZERO, futures_next(wake)).await
                {}
            }
            let mut entries = Vec::new();
            // A direct get on a stream that does not exist waits for the request timeout:
            // ask once whether it exists until it does.
            if !self.created.load(Ordering::Relaxed) && self.stream(&conn, false).await?.is_some() {
                self.created.store(true, Ordering::Relaxed);
            }
            let stream = conn
                .jetstream
                .get_stream_no_info(&self.stream)
                .await
                .map_err(unavailable)?;
            while self.created.load(Ordering::Relaxed) && entries.len() < count.max(1) {
                let got = self
                    .timed(self.response_timeout, async {
                        Ok(stream
                            .direct_get_next_for_subject(self.entries_filter(), Some(from))
                            .await)
                    })
                    .await?;
                match got {
                    Ok(message) => {
                        from = message.sequence.saturating_add(1);
                        entries.push(parse_entry(&message));
                    }
                    Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => break,
                    // No stream (deleted, not created yet): nothing to read.
                    Err(error) => match self.stream(&conn, false).await? {
                        None => {
                            self.created.store(false, Ordering::Relaxed);
                            break;
                        }
                        Some(_) => return Err(unavailable(error)),
                    },
                }
            }
            // A stream that went back (deleted and created again, restored from older data)
            // has not reached `after`'s sequence (or hands it out again, when the entry's
            // `prev` shows the gap): read it from its first entry, whose `prev` shows the
            // reader the gap.
            if let (true, false, Some(after_sequence)) =
                (entries.is_empty(), rewound, after_sequence)
            {
                rewound = true;
                if let Some(mut stream) = self.stream(&conn, false).await? {
                    let state = &stream.info().await.map_err(unavailable)?.state;
                    if state.last_sequence < after_sequence && state.messages > 0 {
                        from = state.first_sequence.max(1);
                        continue;
                    }
                }
            }
            let Some(deadline) = deadline else {
                return Ok(entries);
            };
            if !entries.is_empty() {
                return Ok(entries);
            }
            let Some(subscriber) = wake.as_mut() else {
                return Ok(entries);
            };
            match tokio::time::timeout_at(deadline, futures_next(subscriber)).await {
                Ok(Some(_)) => continue,
                // The subscription ended (the client closed): subscribe again next time.
                Ok(None) => {
                    *wake = None;
                    return Ok(entries);
                }
                Err(_) => return Ok(entries),
            }
        }
    }
}

/// The next message of a subscription (`None`: it ended).
async fn futures_next(subscriber: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut *subscriber), cx)
    })
    .await
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> BrokerError {
    BrokerError::Unavailable(Box::new(e))
}

fn malformed(what: &str) -> BrokerError {
    BrokerError::Malformed(format!("nats: {what}"))
}

/// The stream sequence of an entry id (`<sequence>-<msg id>`).
fn sequence_of(id: &str) -> Result<u64, BrokerError> {
    id.split('-')
        .next()
        .and_then(|sequence| sequence.parse().ok())
        .ok_or_else(|| malformed("entry id"))
}

/// What a machine's claim message says.
enum Alive {
    /// `live <instance>`: held by that producer instance.
    Live(String),
    /// `gone`: a node marked the machine gone.
    Gone,
    /// `unclaimed`: a node found no claim and started the clock.
    Unclaimed,
}

/// `text` in lowercase hex: a subject token for any machine name.
fn hex(text: &str) -> String {
    crate::hex::lower(text.as_bytes())
}

/// The machine name a subject token in [`hex`] stands for.
fn unhex(token: &str) -> Option<String> {
    if token.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn header<'a>(message: &'a StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|value| value.as_str())
}

fn entry_id(message: &StreamMessage) -> EntryId {
    format!("{}-{}", message.sequence, header(message, ID).unwrap_or(""))
}

/// One message as an entry. What is missing or unreadable (a foreign writer) leaves the
/// entry without an event, which the follower counts as malformed and moves past.
fn parse_entry(message: &StreamMessage) -> Entry {
    let machine = header(message, MACHINE).unwrap_or("").to_owned();
    let gone = header(message, GONE) == Some("1");
    let prev = header(message, PREV).unwrap_or("").to_owned();
    let payload = &message.payload[..];
    let (event, health) = match header(message, EVENT_LEN).map(str::parse::<usize>) {
        None => (payload.to_vec(), None),
        Some(Ok(len)) if len <= payload.len() => {
            (payload[..len].to_vec(), Some(payload[len..].to_vec()))
        }
        Some(_) => (Vec::new(), None),
    };
    Entry {
        id: entry_id(message),
        prev,
        seq: message.sequence,
        machine,
        gone,
        record: Record { event, health },
    }
}

/// A checkpoint as a message: the magic line, `seq`, the entry id, the snapshot's length,
/// each on its line, then the snapshot and the health list.
fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut value = format!(
        "{CHECKPOINT_MAGIC}\n{}\n{}\n{}\n{}\n",
        checkpoint.machine,
        checkpoint.seq,
        checkpoint.entry,
        checkpoint.snapshot.len()
    )
    .into_bytes();
    value.extend_from_slice(&checkpoint.snapshot);
    value.extend_from_slice(&checkpoint.health);
    value
}

fn decode_checkpoint(value: &[u8]) -> Result<Checkpoint, BrokerError> {
    let bad = || malformed("checkpoint");
    let mut rest = value;
    let mut line = || -> Result<&str, BrokerError> {
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
        let text = std::str::from_utf8(&rest[..end]).map_err(|_| bad())?;
        rest = &rest[end + 1..];
        Ok(text)
    };
    if line()? != CHECKPOINT_MAGIC {
        return Err(bad());
    }
    let machine = line()?.to_owned();
    let seq = line()?.parse().map_err(|_| bad())?;
    let entry = line()?.to_owned();
    let len: usize = line()?.parse().map_err(|_| bad())?;
    if len > rest.len() {
        return Err(bad());
    }
    Ok(Checkpoint {
        machine,
        seq,
        entry,
        snapshot: rest[..len].to_vec(),
        health: rest[len..].to_vec(),
    })
}

impl Broker for NatsBroker {
    async fn append(&self, append: &Append<'_>) -> Result<Appended, BrokerError> {
        let limit = self
            .response_timeout
            .saturating_mul(4 + append.records.len() as u32);
        let result = self.timed(limit, self.append_now(append)).await;
        if let Err(BrokerError::Unavailable(_)) = &result {
            // The next call connects again if the client gave up.
            self.conn.lock().await.take();
        }
        result
    }

    async fn claim(
        &self,
        machine: &str,
        instance: &str,
        stale_after: Duration,
    ) -> Result<Claim, BrokerError> {
        self.timed(
            self.response_timeout.saturating_mul(4),
            self.claim_now(machine, instance, stale_after),
        )
        .await
    }

    async fn mark_gone(
        &self,
        machine: &str,
        stale_after: Duration,
        tail: Option<&str>,
        record: &Record,
    ) -> Result<Option<Appended>, BrokerError> {
        self.timed(
            self.response_timeout.saturating_mul(4),
            self.mark_gone_now(machine, stale_after, tail, record),
        )
        .await
    }

    async fn last_of(&self, machine: &str) -> Result<Option<EntryId>, BrokerError> {
        self.timed(self.response_timeout.saturating_mul(2), async {
            let conn = self.connection().await?;
            self.last_of_now(&conn, machine).await
        })
        .await
    }

    fn handle(&self) -> Self {
        NatsBroker {
            url: self.url.clone(),
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            checkpoint_stream: self.checkpoint_stream.clone(),
            checkpoint_subject: self.checkpoint_subject.clone(),
            max_len: self.max_len,
            response_timeout: self.response_timeout,
            conn: Mutex::new(None),
            tail: std::sync::Mutex::new(None),
            created: AtomicBool::new(false),
            wake: Mutex::new(None),
        }
    }

    async fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), BrokerError> {
        self.timed(self.response_timeout.saturating_mul(2), async {
            let conn = self.connection().await?;
            self.checkpoints(&conn).await?;
            conn.jetstream
                .publish(
                    self.checkpoint_subject_of(&checkpoint.machine),
                    Bytes::from(encode_checkpoint(checkpoint)),
                )
                .await
                .map_err(unavailable)?
                .await
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn read_checkpoint(&self, machine: &str) -> Result<Option<Checkpoint>, BrokerError> {
        self.timed(self.response_timeout.saturating_mul(2), async {
            let conn = self.connection().await?;
            let checkpoints = self.checkpoints(&conn).await?;
            match checkpoints
                .direct_get_last_for_subject(self.checkpoint_subject_of(machine))
                .await
            {
                Ok(message) => decode_checkpoint(&message.payload).map(Some),
                Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => Ok(None),
                Err(error) => Err(unavailable(error)),
            }
        })
        .await
    }

    async fn read_checkpoints(&self) -> Result<Vec<Result<Checkpoint, BrokerError>>, BrokerError> {
        self.timed(self.response_timeout.saturating_mul(8), async {
            let conn = self.connection().await?;
            let checkpoints = self.checkpoints(&conn).await?;
            let mut found = Vec::new();
            let mut machines = std::collections::BTreeSet::new();
            for message in self
                .every_last(&checkpoints, format!("{}.>", self.checkpoint_subject))
                .await?
            {
                let checkpoint = decode_checkpoint(&message.payload);
                if let Ok(checkpoint) = &checkpoint {
                    machines.insert(checkpoint.machine.clone());
                }
                found.push(checkpoint);
            }
            // A machine that claimed its name and is not gone has a checkpoint, once it
            // appended: one without is missing (deleted), which a node must not build past.
            let prefix = format!("{}.", self.alive_prefix());
            for message in self
                .every_last(&checkpoints, format!("{}>", prefix))
                .await?
            {
                let live = message.payload.starts_with(b"live ");
                let machine = message
                    .subject
                    .strip_prefix(prefix.as_str())
                    .and_then(unhex);
                if let (true, Some(machine)) = (live, machine) {
                    if !machines.contains(&machine)
                        && self.last_of_now(&conn, &machine).await?.is_some()
                    {
                        found.push(Err(malformed(&format!(
                            "no checkpoint of machine {machine:?}"
                        ))));
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    async fn read(
        &self,
        after: Option<&str>,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, BrokerError> {
        let limit = self
            .response_timeout
            .saturating_mul(2)
            .saturating_add(block.unwrap_or_default());
        self.timed(limit, self.read_now(after, count, block)).await
    }

    fn retention(&self) -> Option<usize> {
        Some(self.max_len)
    }
}

#[cfg(test)]
mod tests {
    // Here unwrap() is an assertion on values the test itself built.
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_garbage_is_malformed() {
        let checkpoint = Checkpoint {
            machine: "alice-laptop".into(),
            seq: 42,
            entry: "17-123-456:3/0".into(),
            snapshot: b"{\"seq\":42}\nwith a newline".to_vec(),
            health: b"[]".to_vec(),
        };
        let value = encode_checkpoint(&checkpoint);
        assert_eq!(decode_checkpoint(&value).unwrap(), checkpoint);
        for bad in [
            &b""[..],
            b"x\n",
            b"agentwatch-checkpoint-2\nm\n1\ne\n99\n{}",
        ] {
            assert!(matches!(
                decode_checkpoint(bad),
                Err(BrokerError::Malformed(_))
            ));
        }
        assert_eq!(sequence_of("17-123-456:3/0").unwrap(), 17);
        assert!(sequence_of("x-1").is_err());
        assert_eq!(name_of("agentwatch:events.a b"), "agentwatch_events_a_b");
        assert_eq!(
            unhex(&hex("alice.laptop-2")).as_deref(),
            Some("alice.laptop-2")
        );
        assert_eq!(unhex("zz"), None);
    }
}
