//! The Redis Streams engine: [`RedisBroker`].

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::{Append, Appended, Broker, BrokerError, Checkpoint, Claim, Entry, EntryId, Record};

/// Default trim length of the stream: Redis keeps at least this many entries
/// (`XADD … MAXLEN ~ 10000`).
pub(crate) const DEFAULT_MAX_LEN: usize = 10_000;

/// How long one command may take (beyond a read's own blocking time) before the connection
/// is given up as broken and reopened.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest [`RedisBroker::response_timeout`]: one hour. Longer values are lowered to it.
pub(crate) const MAX_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Appends a batch atomically. Each entry's `prev` is the id of the entry before it in the
/// stream, read inside the script, so it is exact whoever appended before. The batch id kept
/// in `KEYS[2]` makes a retried batch a no-op that returns the same last id.
///
/// KEYS: stream, append-state hash. ARGV: max_len, batch id, the id the stream must end with
/// ('' when the producer has not appended yet; any other tail means the producer's entries
/// were lost: append nothing, answer ''), then (seq, event, health) per record, health empty
/// for an ordinary event.
// KEYS: stream, machine hash, seq counter, machines set. ARGV: max length, batch, after
// ('' for none), machine, instance, then an event and a health ('' for none) per record.
const APPEND_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[2], 'batch') == ARGV[2] then
  return {redis.call('HGET', KEYS[2], 'last'), redis.call('HGET', KEYS[2], 'lastseq')}
end
local holder = redis.call('HGET', KEYS[2], 'instance')
if holder and holder ~= ARGV[5] then return {'', 'taken'} end
if ARGV[3] ~= '' then
  if redis.call('HGET', KEYS[2], 'last') ~= ARGV[3] then return {'', '0'} end
  if #redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3]) == 0 then return {'', '0'} end
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = ''
if #last > 0 then prev = last[1][1] end
local seq = 0
for i = 6, #ARGV, 2 do
  seq = redis.call('INCR', KEYS[3])
  if ARGV[i + 1] == '' then
    prev = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
      'seq', seq, 'prev', prev, 'machine', ARGV[4], 'event', ARGV[i])
  else
    prev = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
      'seq', seq, 'prev', prev, 'machine', ARGV[4], 'event', ARGV[i], 'health', ARGV[i + 1])
  end
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], 'batch', ARGV[2], 'last', prev, 'lastseq', seq,
  'seen', t[1] * 1000 + math.floor(t[2] / 1000), 'gone', '')
redis.call('SADD', KEYS[4], ARGV[4])
return {prev, tostring(seq)}
"#;

// KEYS: machine hash. ARGV: instance, stale_after (ms).
const CLAIM_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local holder = redis.call('HGET', KEYS[1], 'instance')
local gone = redis.call('HGET', KEYS[1], 'gone') == '1'
if holder == ARGV[1] and not gone then
  redis.call('HSET', KEYS[1], 'seen', now)
  return 'held'
end
if holder and holder ~= ARGV[1] and not gone then
  local age = now - tonumber(redis.call('HGET', KEYS[1], 'seen') or '0')
  if age < tonumber(ARGV[2]) then return 'taken:' .. age end
end
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'seen', now)
return 'fresh'
"#;

// KEYS: stream, machine hash, seq counter. ARGV: max length, stale_after (ms), machine,
// event.
const GONE_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[2], 'gone') == '1' then return {'', '0'} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local seen = redis.call('HGET', KEYS[2], 'seen')
if not seen then
  -- No claim at all (lost with the broker's data, or never made): the clock starts now.
  redis.call('HSET', KEYS[2], 'seen', now)
  return {'', '0'}
end
if now - tonumber(seen) < tonumber(ARGV[2]) then return {'', '0'} end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = ''
if #last > 0 then prev = last[1][1] end
local seq = redis.call('INCR', KEYS[3])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'seq', seq, 'prev', prev, 'machine', ARGV[3], 'gone', '1', 'event', ARGV[4])
redis.call('HSET', KEYS[2], 'last', id, 'lastseq', seq, 'gone', '1')
return {id, tostring(seq)}
"#;

/// [`Broker`] on Redis Streams (Redis ≥ 5; tested on 7).
///
/// For the stream key `K` it uses `K` (the stream), `K:seq` (the last `seq` assigned),
/// `K:machines` (a set of every machine name seen), and per machine `M`,
/// `K:machine:M` (its claim and last append) and `K:checkpoint:M` (see the
/// [module docs](super) for their fields). It holds one multiplexed connection, opened on
/// first use and reopened after any failure; a blocking read occupies it, so give each
/// [`Follower`](super::Follower) its own `RedisBroker`.
///
/// ```no_run
/// use agentwatch_ws::broker::RedisBroker;
///
/// let broker = RedisBroker::open("redis://127.0.0.1:6379", "agentwatch:events")?
///     .max_len(10_000);
/// assert_eq!(broker.checkpoint_key("alice-laptop"), "agentwatch:events:checkpoint:alice-laptop");
/// # Ok::<(), agentwatch_ws::broker::BrokerError>(())
/// ```
pub struct RedisBroker {
    client: Client,
    stream: String,
    max_len: usize,
    response_timeout: Duration,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    scripts: Scripts,
}

#[derive(Clone)]
struct Scripts {
    append: redis::Script,
    claim: redis::Script,
    gone: redis::Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            append: redis::Script::new(APPEND_SCRIPT),
            claim: redis::Script::new(CLAIM_SCRIPT),
            gone: redis::Script::new(GONE_SCRIPT),
        }
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl RedisBroker {
    /// A broker on the server at `url` (`redis://host:port/db`, `rediss://` needs a TLS
    /// feature of the `redis` crate) and the stream key `stream`. Does not connect yet.
    ///
    /// # Errors
    /// [`BrokerError::Malformed`] when `url` cannot be parsed.
    pub fn open(url: &str, stream: impl Into<String>) -> Result<Self, BrokerError> {
        let client =
            Client::open(url).map_err(|e| BrokerError::Malformed(format!("redis url: {e}")))?;
        let stream = stream.into();
        Ok(RedisBroker {
            client,
            stream,
            max_len: DEFAULT_MAX_LEN,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            conn: tokio::sync::Mutex::new(None),
            scripts: Scripts::new(),
        })
    }

    /// The trim length: Redis keeps at least this many entries (`MAXLEN ~`). Default
    /// 10 000; 0 is raised to 1, with a `warn`.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = crate::layer::bounded("broker.max_len", max_len, 1, usize::MAX);
        self
    }

    /// How long a command may take (beyond a read's blocking time) before the connection is
    /// dropped and the operation fails as [`BrokerError::Unavailable`]. Default 2 s; from
    /// 1 ms to 1 hour (values outside are raised or lowered, with a `warn`).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = crate::layer::bounded(
            "broker.response_timeout",
            timeout,
            Duration::from_millis(1),
            MAX_RESPONSE_TIMEOUT,
        );
        self
    }

    /// The stream key.
    pub fn stream_key(&self) -> &str {
        &self.stream
    }

    /// The checkpoint hash key of `machine`: `<stream>:checkpoint:<machine>`.
    pub fn checkpoint_key(&self, machine: &str) -> String {
        format!("{}:checkpoint:{machine}", self.stream)
    }

    /// The hash key of `machine`'s claim and last append: `<stream>:machine:<machine>`,
    /// fields `instance` (the producer instance holding the name), `seen` (when it last
    /// appended or renewed its claim, Redis's clock, ms since the Unix epoch), `gone` (`1`
    /// once a node marked it gone), `last`/`lastseq` (its last entry) and `batch` (the id of
    /// its last append call).
    pub fn machine_key(&self, machine: &str) -> String {
        format!("{}:machine:{machine}", self.stream)
    }

    fn seq_key(&self) -> String {
        format!("{}:seq", self.stream)
    }

    fn machines_key(&self) -> String {
        format!("{}:machines", self.stream)
    }

    /// Runs `op` on the connection (opened if needed) within `limit`; any failure drops the
    /// connection so the next call reconnects.
    async fn with_conn<T, F, Fut>(&self, limit: Duration, op: F) -> Result<T, BrokerError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut slot = self.conn.lock().await;
        let conn = match &*slot {
            Some(conn) => conn.clone(),
            None => {
                // Timeouts are ours (per call, so a blocking read gets its own allowance).
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.response_timeout))
                    .set_response_timeout(None);
                let conn = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable)?;
                *slot = Some(conn.clone());
                conn
            }
        };
        let result = match tokio::time::timeout(limit, op(conn)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => {
                *slot = None;
                return Err(BrokerError::Unavailable("no answer in time".into()));
            }
        };
        if result.is_io_error()
            || result.is_connection_dropped()
            || result.is_connection_refusal()
            || result.is_timeout()
            || result.is_unrecoverable_error()
        {
            *slot = None;
        }
        Err(unavailable(result))
    }
}

fn unavailable(e: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(Box::new(e))
}

impl Broker for RedisBroker {
    async fn append(&self, append: &Append<'_>) -> Result<Appended, BrokerError> {
        let mut invocation = self.scripts.append.prepare_invoke();
        invocation
            .key(&self.stream)
            .key(self.machine_key(append.machine))
            .key(self.seq_key())
            .key(self.machines_key())
            .arg(self.max_len)
            .arg(append.batch)
            .arg(append.after.unwrap_or(""))
            .arg(append.machine)
            .arg(append.instance);
        for record in append.records {
            invocation
                .arg(&record.event[..])
                .arg(record.health.as_deref().unwrap_or(b""));
        }
        let (entry, seq): (String, String) = self
            .with_conn(self.response_timeout, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if entry.is_empty() {
            if seq == "taken" {
                return Err(BrokerError::NameTaken {
                    machine: append.machine.to_owned(),
                    age: Duration::ZERO,
                });
            }
            return Err(BrokerError::StreamLost);
        }
        let seq = parse_seq(seq.as_bytes()).ok_or_else(|| malformed("assigned seq"))?;
        Ok(Appended { entry, seq })
    }

    async fn claim(
        &self,
        machine: &str,
        instance: &str,
        stale_after: Duration,
    ) -> Result<Claim, BrokerError> {
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation
            .key(self.machine_key(machine))
            .arg(instance)
            .arg(stale_after.as_millis() as u64);
        let answer: String = self
            .with_conn(self.response_timeout, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        match answer.as_str() {
            "held" => Ok(Claim::Held),
            "fresh" => Ok(Claim::Taken),
            taken => match taken
                .strip_prefix("taken:")
                .and_then(|age| age.parse().ok())
            {
                Some(age) => Err(BrokerError::NameTaken {
                    machine: machine.to_owned(),
                    age: Duration::from_millis(age),
                }),
                None => Err(malformed("claim answer")),
            },
        }
    }

    async fn mark_gone(
        &self,
        machine: &str,
        stale_after: Duration,
        _tail: Option<&str>,
        record: &Record,
    ) -> Result<Option<Appended>, BrokerError> {
        let mut invocation = self.scripts.gone.prepare_invoke();
        invocation
            .key(&self.stream)
            .key(self.machine_key(machine))
            .key(self.seq_key())
            .arg(self.max_len)
            .arg(stale_after.as_millis() as u64)
            .arg(machine)
            .arg(&record.event[..]);
        let (entry, seq): (String, String) = self
            .with_conn(self.response_timeout, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if entry.is_empty() {
            return Ok(None);
        }
        let seq = parse_seq(seq.as_bytes()).ok_or_else(|| malformed("assigned seq"))?;
        Ok(Some(Appended { entry, seq }))
    }

    async fn last_of(&self, machine: &str) -> Result<Option<EntryId>, BrokerError> {
        let key = self.machine_key(machine);
        let last: Option<String> = self
            .with_conn(self.response_timeout, |mut conn| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg("last")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let Some(last) = last.filter(|last| !last.is_empty()) else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.stream).arg(&last).arg(&last);
        let reply: Value = self
            .with_conn(self.response_timeout, |mut conn| async move {
                cmd.query_async(&mut conn).await
            })
            .await?;
        Ok(match reply {
            Value::Array(entries) if !entries.is_empty() => Some(last),
            _ => None,
        })
    }

    fn handle(&self) -> Self {
        RedisBroker {
            client: self.client.clone(),
            stream: self.stream.clone(),
            max_len: self.max_len,
            response_timeout: self.response_timeout,
            conn: tokio::sync::Mutex::new(None),
            scripts: self.scripts.clone(),
        }
    }

    async fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(self.checkpoint_key(&checkpoint.machine))
            .arg("seq")
            .arg(checkpoint.seq)
            .arg("entry")
            .arg(&checkpoint.entry)
            .arg("snapshot")
            .arg(&checkpoint.snapshot[..])
            .arg("health")
            .arg(&checkpoint.health[..])
            .ignore()
            .cmd("SADD")
            .arg(self.machines_key())
            .arg(&checkpoint.machine)
            .ignore();
        self.with_conn(self.response_timeout, |mut conn| async move {
            pipe.query_async::<Value>(&mut conn).await
        })
        .await
        .map(drop)
    }

    async fn read_checkpoint(&self, machine: &str) -> Result<Option<Checkpoint>, BrokerError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.checkpoint_key(machine))
            .arg("seq")
            .arg("entry")
            .arg("snapshot")
            .arg("health");
        let fields: Vec<Option<Vec<u8>>> = self
            .with_conn(self.response_timeout, |mut conn| async move {
                cmd.query_async(&mut conn).await
            })
            .await?;
        let [seq, entry, snapshot, health]: [Option<Vec<u8>>; 4] = fields
            .try_into()
            .map_err(|_| BrokerError::Malformed("checkpoint: HMGET arity".into()))?;
        let (Some(seq), Some(entry), Some(snapshot)) = (seq, entry, snapshot) else {
            return Ok(None);
        };
        Ok(Some(Checkpoint {
            machine: machine.to_owned(),
            seq: parse_seq(&seq).ok_or_else(|| BrokerError::Malformed("checkpoint seq".into()))?,
            entry: String::from_utf8(entry)
                .map_err(|_| BrokerError::Malformed("checkpoint entry id".into()))?,
            snapshot,
            health: health.unwrap_or_default(),
        }))
    }

    async fn read_checkpoints(&self) -> Result<Vec<Result<Checkpoint, BrokerError>>, BrokerError> {
        let key = self.machines_key();
        let mut machines: Vec<String> = self
            .with_conn(self.response_timeout, |mut conn| async move {
                redis::cmd("SMEMBERS").arg(key).query_async(&mut conn).await
            })
            .await?;
        machines.sort();
        let mut checkpoints = Vec::with_capacity(machines.len());
        for machine in machines {
            match self.read_checkpoint(&machine).await {
                Ok(Some(checkpoint)) => checkpoints.push(Ok(checkpoint)),
                // Every machine that appended writes a checkpoint right after: one without
                // is missing (deleted), which a node must not build past, unless the machine
                // is gone (and its entries with it).
                Ok(None) => {
                    let key = self.machine_key(&machine);
                    let gone: Option<String> = self
                        .with_conn(self.response_timeout, |mut conn| async move {
                            redis::cmd("HGET")
                                .arg(key)
                                .arg("gone")
                                .query_async(&mut conn)
                                .await
                        })
                        .await?;
                    if gone.as_deref() != Some("1") && self.last_of(&machine).await?.is_some() {
                        checkpoints.push(Err(BrokerError::Malformed(format!(
                            "no checkpoint of machine {machine:?}"
                        ))));
                    }
                }
                Err(BrokerError::Malformed(what)) => {
                    checkpoints.push(Err(BrokerError::Malformed(what)));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(checkpoints)
    }

    async fn read(
        &self,
        after: Option<&str>,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, BrokerError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        if let Some(block) = block {
            // BLOCK 0 would mean "forever".
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS")
            .arg(&self.stream)
            .arg(after.unwrap_or("0-0"));
        let limit = self
            .response_timeout
            .saturating_add(block.unwrap_or_default());
        let reply: Value = self
            .with_conn(
                limit,
                |mut conn| async move { cmd.query_async(&mut conn).await },
            )
            .await?;
        parse_xread(reply)
    }

    fn retention(&self) -> Option<usize> {
        Some(self.max_len)
    }
}

fn parse_seq(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn malformed(what: &str) -> BrokerError {
    BrokerError::Malformed(format!("stream entry: {what}"))
}

/// `XREAD`'s reply: nil (nothing before the timeout), or one `[key, [[id, [f, v, …]], …]]`
/// (RESP2 arrays, or a RESP3 map keyed by stream).
fn parse_xread(reply: Value) -> Result<Vec<Entry>, BrokerError> {
    let entries = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => match streams.into_iter().next() {
            None => return Ok(Vec::new()),
            Some(Value::Array(pair)) => pair.into_iter().nth(1),
            Some(_) => return Err(malformed("reply shape")),
        },
        Value::Map(streams) => streams.into_iter().next().map(|(_, v)| v),
        _ => return Err(malformed("reply shape")),
    };
    match entries {
        None => Ok(Vec::new()),
        Some(Value::Array(entries)) => entries.into_iter().map(parse_entry).collect(),
        Some(_) => Err(malformed("entries shape")),
    }
}

fn parse_entry(value: Value) -> Result<Entry, BrokerError> {
    let Value::Array(parts) = value else {
        return Err(malformed("entry shape"));
    };
    let mut parts = parts.into_iter();
    let id = match parts.next() {
        Some(Value::BulkString(id)) => String::from_utf8(id).map_err(|_| malformed("id"))?,
        Some(Value::SimpleString(id)) => id,
        _ => return Err(malformed("id")),
    };
    let fields = match parts.next() {
        Some(Value::Array(fields)) => fields,
        _ => return Err(malformed("fields")),
    };
    // A field that is missing or unreadable (a foreign writer) leaves the entry without an
    // event: the follower counts it as malformed and moves past it, rather than stalling on a
    // read that can never succeed.
    let (mut seq, mut prev, mut event, mut health) = (0, String::new(), Vec::new(), None);
    let (mut machine, mut gone) = (String::new(), false);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let (Value::BulkString(name), Value::BulkString(value)) = (name, value) else {
            continue;
        };
        match &name[..] {
            b"seq" => seq = parse_seq(&value).unwrap_or(0),
            b"prev" => prev = String::from_utf8(value).unwrap_or_default(),
            b"event" => event = value,
            b"health" => health = Some(value),
            b"machine" => machine = String::from_utf8(value).unwrap_or_default(),
            b"gone" => gone = value == b"1",
            // Unknown fields are left for newer writers.
            _ => {}
        }
    }
    Ok(Entry {
        id,
        prev,
        seq,
        machine,
        gone,
        record: Record { event, health },
    })
}

#[cfg(test)]
mod tests {
    // Here unwrap() is an assertion on values the test itself built.
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| [bulk(k), bulk(v)])
                    .collect(),
            ),
        ])
    }

    #[test]
    fn parses_xread_replies_in_resp2_and_resp3_and_nil() {
        let entries = Value::Array(vec![
            entry("1-0", &[("seq", "7"), ("prev", ""), ("event", "{}")]),
            entry(
                "2-0",
                &[
                    ("seq", "8"),
                    ("prev", "1-0"),
                    ("event", "{\"type\":\"snapshot\"}"),
                    ("health", "[]"),
                    ("future", "x"),
                ],
            ),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("k"), entries)]);
        for reply in [resp2, resp3] {
            let parsed = parse_xread(reply).unwrap();
            assert_eq!(parsed.len(), 2);
            assert_eq!(
                (parsed[0].id.as_str(), parsed[0].prev.as_str()),
                ("1-0", "")
            );
            assert_eq!(
                (parsed[0].seq, parsed[0].record.health.is_none()),
                (7, true)
            );
            assert_eq!(parsed[1].prev, "1-0");
            assert_eq!(parsed[1].record.health.as_deref(), Some(&b"[]"[..]));
        }
        assert!(parse_xread(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn a_foreign_entry_parses_without_an_event_and_a_bad_shape_fails() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![entry("1-0", &[("seq", "x"), ("other", "{}")])]),
        ])]);
        let parsed = parse_xread(reply).unwrap();
        assert_eq!((parsed[0].seq, parsed[0].record.event.len()), (0, 0));
        assert!(parse_xread(Value::Int(3)).is_err());
    }
}
