//! The Redis Streams engine: [`RedisBroker`].

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::{Broker, BrokerError, Checkpoint, Entry, EntryId, Record};

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
const APPEND_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[2], 'batch') == ARGV[2] then
  return redis.call('HGET', KEYS[2], 'last')
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = ''
if #last > 0 then prev = last[1][1] end
if ARGV[3] ~= '' and prev ~= ARGV[3] then return '' end
for i = 4, #ARGV, 3 do
  if ARGV[i + 2] == '' then
    prev = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
      'seq', ARGV[i], 'prev', prev, 'event', ARGV[i + 1])
  else
    prev = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
      'seq', ARGV[i], 'prev', prev, 'event', ARGV[i + 1], 'health', ARGV[i + 2])
  end
end
redis.call('HSET', KEYS[2], 'batch', ARGV[2], 'last', prev)
return prev
"#;

/// [`Broker`] on Redis Streams (Redis ≥ 5; tested on 7).
///
/// For the stream key `K` it uses `K` (the stream), `K:checkpoint` and `K:append` (see the
/// [module docs](super) for their fields). It holds one multiplexed connection, opened on
/// first use and reopened after any failure; a blocking read occupies it, so give each
/// [`Follower`](super::Follower) its own `RedisBroker`.
///
/// ```no_run
/// use agentwatch_ws::broker::RedisBroker;
///
/// let broker = RedisBroker::open("redis://127.0.0.1:6379", "agentwatch:events")?
///     .max_len(10_000);
/// assert_eq!(broker.checkpoint_key(), "agentwatch:events:checkpoint");
/// # Ok::<(), agentwatch_ws::broker::BrokerError>(())
/// ```
pub struct RedisBroker {
    client: Client,
    stream: String,
    checkpoint_key: String,
    append_key: String,
    max_len: usize,
    response_timeout: Duration,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    script: redis::Script,
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
            checkpoint_key: format!("{stream}:checkpoint"),
            append_key: format!("{stream}:append"),
            stream,
            max_len: DEFAULT_MAX_LEN,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            conn: tokio::sync::Mutex::new(None),
            script: redis::Script::new(APPEND_SCRIPT),
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

    /// The checkpoint hash key: `<stream>:checkpoint`.
    pub fn checkpoint_key(&self) -> &str {
        &self.checkpoint_key
    }

    /// The append-state hash key: `<stream>:append`.
    pub fn append_key(&self) -> &str {
        &self.append_key
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
    async fn append(
        &self,
        batch: &str,
        after: Option<&str>,
        records: &[Record],
    ) -> Result<EntryId, BrokerError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&self.stream)
            .key(&self.append_key)
            .arg(self.max_len)
            .arg(batch)
            .arg(after.unwrap_or(""));
        for record in records {
            invocation
                .arg(record.seq)
                .arg(&record.event[..])
                .arg(record.health.as_deref().unwrap_or(b""));
        }
        let last: String = self
            .with_conn(self.response_timeout, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if last.is_empty() {
            return Err(BrokerError::StreamLost);
        }
        Ok(last)
    }

    async fn tail(&self) -> Result<Option<EntryId>, BrokerError> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(&self.stream).arg("+").arg("-").arg("COUNT").arg(1);
        let reply: Value = self
            .with_conn(self.response_timeout, |mut conn| async move {
                cmd.query_async(&mut conn).await
            })
            .await?;
        let entries = match reply {
            Value::Nil => return Ok(None),
            Value::Array(entries) => entries,
            _ => return Err(malformed("XREVRANGE reply shape")),
        };
        Ok(match entries.into_iter().next() {
            Some(entry) => Some(parse_entry(entry)?.id),
            None => None,
        })
    }

    fn handle(&self) -> Self {
        RedisBroker {
            client: self.client.clone(),
            stream: self.stream.clone(),
            checkpoint_key: self.checkpoint_key.clone(),
            append_key: self.append_key.clone(),
            max_len: self.max_len,
            response_timeout: self.response_timeout,
            conn: tokio::sync::Mutex::new(None),
            script: redis::Script::new(APPEND_SCRIPT),
        }
    }

    async fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), BrokerError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.checkpoint_key)
            .arg("seq")
            .arg(checkpoint.seq)
            .arg("entry")
            .arg(&checkpoint.entry)
            .arg("snapshot")
            .arg(&checkpoint.snapshot[..])
            .arg("health")
            .arg(&checkpoint.health[..]);
        self.with_conn(self.response_timeout, |mut conn| async move {
            cmd.query_async::<Value>(&mut conn).await
        })
        .await
        .map(drop)
    }

    async fn read_checkpoint(&self) -> Result<Option<Checkpoint>, BrokerError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.checkpoint_key)
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
            seq: parse_seq(&seq).ok_or_else(|| BrokerError::Malformed("checkpoint seq".into()))?,
            entry: String::from_utf8(entry)
                .map_err(|_| BrokerError::Malformed("checkpoint entry id".into()))?,
            snapshot,
            health: health.unwrap_or_default(),
        }))
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
            // Unknown fields are left for newer writers.
            _ => {}
        }
    }
    Ok(Entry {
        id,
        prev,
        record: Record { seq, event, health },
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
                (parsed[0].record.seq, parsed[0].record.health.is_none()),
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
        assert_eq!((parsed[0].record.seq, parsed[0].record.event.len()), (0, 0));
        assert!(parse_xread(Value::Int(3)).is_err());
    }
}
