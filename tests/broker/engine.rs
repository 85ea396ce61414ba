//! The engines the broker tests run against, behind one trait: a stream of the test's own on
//! the shared server, the faults the tests make on it, and a server of the test's own for the
//! faults that need a restart.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentwatch_ws::broker::{Broker, NatsBroker, RedisBroker};

use crate::common::nats::nats_url;
use crate::common::stream_key::{StreamKey, redis_available, redis_url};

/// A broker engine as the tests drive it. Each value is one stream of the test's own on one
/// server (`url`), removed when dropped.
pub trait Engine: Sized + Send + Sync + 'static {
    type Broker: Broker;

    /// The shared server's URL, or `None` (after a skip notice) when none answers and its
    /// `AGENTWATCH_REQUIRE_…` variable is not set.
    fn shared() -> Option<String>;

    /// A stream of its own on the server at `url`.
    fn stream(url: &str, scope: &str) -> Self;

    /// The server this stream lives on.
    fn url(&self) -> &str;

    /// `broker` with every timeout of its own at `Duration::MAX`.
    fn longest_timeouts(broker: Self::Broker) -> Self::Broker;

    /// A broker on this stream through `url` (the server's, or a proxy's in front of it).
    fn broker_via(&self, url: &str) -> Self::Broker;

    fn broker(&self) -> Self::Broker {
        self.broker_via(self.url())
    }

    /// The URL of a TCP proxy listening on `addr` in front of this server.
    fn url_of(&self, addr: SocketAddr) -> String;

    /// `host:port` of this server.
    fn address(&self) -> String;

    /// Entries held.
    fn stream_len(&self) -> impl Future<Output = usize> + Send;

    /// Keeps only the last `keep` entries (exactly).
    fn trim(&self, keep: usize) -> impl Future<Output = ()> + Send;

    /// Deletes the stream (the checkpoint stays).
    fn delete_stream(&self) -> impl Future<Output = ()> + Send;

    /// Deletes the stream and the checkpoint, as a broker restarted without its data.
    fn lose(&self) -> impl Future<Output = ()> + Send;

    /// Deletes `machine`'s checkpoint (the stream stays).
    fn delete_checkpoint(&self, machine: &str) -> impl Future<Output = ()> + Send;

    /// Replaces `machine`'s checkpoint's snapshot with bytes that are not JSON.
    fn corrupt_checkpoint(&self, machine: &str) -> impl Future<Output = ()> + Send;

    /// Appends an entry chained to the stream's tail, as a producer of machine `forger` would
    /// write it, with this `seq` (where the engine stores one: Redis; NATS assigns its own)
    /// and event bytes.
    fn append_raw(&self, seq: u64, event: Vec<u8>) -> impl Future<Output = ()> + Send;

    /// A server of the test's own, its data in `dir`.
    fn own_server(dir: &Path) -> impl Future<Output = Box<dyn OwnServer>> + Send;
}

/// A server the test starts, restarts and kills (never the shared one).
pub trait OwnServer: Send {
    fn url(&self) -> String;
    /// Copies its data as it is now (persisted first) to `to`.
    fn save_to<'a>(
        &'a mut self,
        to: &'a Path,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
    /// Stops it, replaces its data with the copy in `from`, and starts it again on the same
    /// port: a restart from older data.
    fn restart_from<'a>(
        &'a mut self,
        from: &'a Path,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// A free TCP port on 127.0.0.1 (released before use: a small race, fine for tests).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// Waits up to 10 s for `addr` to accept TCP connections.
pub async fn until_listening(addr: &str) {
    crate::common::within("the server to listen", async {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Empties `dir` and fills it with a copy of `from`.
pub fn replace_dir(dir: &Path, from: &Path) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    copy_dir(from, dir);
}

/// A child process killed (and reaped) when dropped.
pub struct Process(pub Option<Child>);

impl Process {
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Redis

/// Redis Streams: the shared Redis on 127.0.0.1:6379 (or `AGENTWATCH_REDIS_URL`).
pub struct Redis {
    key: StreamKey,
    url: String,
}

impl Redis {
    fn control(&self) -> redis::Connection {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("no Redis at {} ({e})", self.url))
    }

    fn key(&self) -> &str {
        &self.key.0
    }
}

impl Engine for Redis {
    type Broker = RedisBroker;

    fn shared() -> Option<String> {
        redis_available().then(redis_url)
    }

    fn stream(url: &str, scope: &str) -> Self {
        Redis {
            key: StreamKey::new(scope),
            url: url.into(),
        }
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn longest_timeouts(broker: RedisBroker) -> RedisBroker {
        broker.response_timeout(Duration::MAX)
    }

    fn broker_via(&self, url: &str) -> RedisBroker {
        RedisBroker::open(url, self.key()).unwrap()
    }

    fn url_of(&self, addr: SocketAddr) -> String {
        format!("redis://{addr}")
    }

    fn address(&self) -> String {
        self.url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .into()
    }

    async fn stream_len(&self) -> usize {
        redis::cmd("XLEN")
            .arg(self.key())
            .query(&mut self.control())
            .unwrap()
    }

    async fn trim(&self, keep: usize) {
        let _: usize = redis::cmd("XTRIM")
            .arg(self.key())
            .arg("MAXLEN")
            .arg(keep)
            .query(&mut self.control())
            .unwrap();
    }

    async fn delete_stream(&self) {
        let _: usize = redis::cmd("DEL")
            .arg(self.key())
            .query(&mut self.control())
            .unwrap();
    }

    async fn lose(&self) {
        let key = self.key();
        let mut conn = self.control();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{key}:*"))
            .query(&mut conn)
            .unwrap();
        keys.push(key.to_owned());
        let _: usize = redis::cmd("DEL").arg(keys).query(&mut conn).unwrap();
    }

    async fn delete_checkpoint(&self, machine: &str) {
        let _: usize = redis::cmd("DEL")
            .arg(format!("{}:checkpoint:{machine}", self.key()))
            .query(&mut self.control())
            .unwrap();
    }

    async fn corrupt_checkpoint(&self, machine: &str) {
        let _: usize = redis::cmd("HSET")
            .arg(format!("{}:checkpoint:{machine}", self.key()))
            .arg("snapshot")
            .arg("{\"seq\": not json")
            .query(&mut self.control())
            .unwrap();
    }

    async fn append_raw(&self, seq: u64, event: Vec<u8>) {
        let mut conn = self.control();
        let tail: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(self.key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut conn)
            .unwrap();
        let prev = tail.first().map(|(id, _)| id.clone()).unwrap_or_default();
        let _: String = redis::cmd("XADD")
            .arg(self.key())
            .arg("*")
            .arg("seq")
            .arg(seq)
            .arg("prev")
            .arg(prev)
            .arg("machine")
            .arg("forger")
            .arg("event")
            .arg(event)
            .query(&mut conn)
            .unwrap();
    }

    async fn own_server(dir: &Path) -> Box<dyn OwnServer> {
        let mut server = OwnRedis {
            port: free_port(),
            dir: dir.to_path_buf(),
            process: Process(None),
        };
        server.start().await;
        Box::new(server)
    }
}

/// `redis-server` on a free port, persisting only on `SAVE` (to `dir/dump.rdb`).
struct OwnRedis {
    port: u16,
    dir: PathBuf,
    process: Process,
}

impl OwnRedis {
    async fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (Debian's redis-server package)");
        self.process = Process(Some(child));
        until_listening(&format!("127.0.0.1:{}", self.port)).await;
    }

    fn control(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }
}

impl OwnServer for OwnRedis {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn save_to<'a>(
        &'a mut self,
        to: &'a Path,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let _: String = redis::cmd("SAVE").query(&mut self.control()).unwrap();
            replace_dir(to, &self.dir);
        })
    }

    fn restart_from<'a>(
        &'a mut self,
        from: &'a Path,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            self.process.kill();
            replace_dir(&self.dir, from);
            self.start().await;
        })
    }
}

// ---------------------------------------------------------------------------------------
// NATS JetStream

/// NATS JetStream: the shared server on 127.0.0.1:4222 (or `AGENTWATCH_NATS_URL`).
pub struct Nats {
    key: String,
    url: String,
}

impl Nats {
    async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("no NATS at {} ({e})", self.url));
        async_nats::jetstream::new(client)
    }

    async fn entries(&self) -> async_nats::jetstream::stream::Stream {
        let broker = self.broker();
        self.jetstream()
            .await
            .get_stream(broker.stream_name())
            .await
            .unwrap()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let (url, broker) = (self.url.clone(), self.broker());
        // Drop runs inside the test's runtime: clean up from a thread with one of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let cleanup = async {
                    let client = async_nats::connect(&url).await.ok()?;
                    let jetstream = async_nats::jetstream::new(client);
                    let _ = jetstream.delete_stream(broker.stream_name()).await;
                    let _ = jetstream.delete_stream(broker.checkpoint_stream()).await;
                    Some(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(3), cleanup).await;
            });
        })
        .join();
    }
}

impl Engine for Nats {
    type Broker = NatsBroker;

    fn shared() -> Option<String> {
        // Engine::shared is called from async tests; the check needs its own runtime.
        let available = crate::common::nats::nats_available_blocking();
        available.then(nats_url)
    }

    fn stream(url: &str, scope: &str) -> Self {
        Nats {
            key: StreamKey::unique_name(scope),
            url: url.into(),
        }
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn longest_timeouts(broker: NatsBroker) -> NatsBroker {
        broker.response_timeout(Duration::MAX)
    }

    fn broker_via(&self, url: &str) -> NatsBroker {
        NatsBroker::open(url, self.key.clone()).unwrap()
    }

    fn url_of(&self, addr: SocketAddr) -> String {
        format!("nats://{addr}")
    }

    fn address(&self) -> String {
        self.url
            .trim_start_matches("nats://")
            .trim_end_matches('/')
            .into()
    }

    async fn stream_len(&self) -> usize {
        let mut stream = self.entries().await;
        stream.info().await.unwrap().state.messages as usize
    }

    async fn trim(&self, keep: usize) {
        self.entries()
            .await
            .purge()
            .keep(keep as u64)
            .await
            .unwrap();
    }

    async fn delete_stream(&self) {
        let broker = self.broker();
        self.jetstream()
            .await
            .delete_stream(broker.stream_name())
            .await
            .unwrap();
    }

    async fn lose(&self) {
        self.delete_stream().await;
        let broker = self.broker();
        self.jetstream()
            .await
            .delete_stream(broker.checkpoint_stream())
            .await
            .unwrap();
    }

    async fn delete_checkpoint(&self, machine: &str) {
        let broker = self.broker();
        let checkpoints = self
            .jetstream()
            .await
            .get_stream(broker.checkpoint_stream())
            .await
            .unwrap();
        let subject = format!(
            "{}.{}",
            broker.subject().replace(".entries", ".checkpoint"),
            machine
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        checkpoints.purge().filter(subject).await.unwrap();
    }

    async fn corrupt_checkpoint(&self, machine: &str) {
        let broker = self.broker();
        let mut checkpoint = broker.read_checkpoint(machine).await.unwrap().unwrap();
        checkpoint.snapshot = b"{\"seq\": not json".to_vec();
        broker.write_checkpoint(&checkpoint).await.unwrap();
    }

    async fn append_raw(&self, seq: u64, event: Vec<u8>) {
        let broker = self.broker();
        let mut stream = self.entries().await;
        let last = stream.info().await.unwrap().state.last_sequence;
        let prev = match stream.direct_get(last).await {
            Ok(message) => format!(
                "{last}-{}",
                message
                    .headers
                    .get("Agentwatch-Id")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            ),
            Err(_) => String::new(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Agentwatch-Seq", seq.to_string());
        headers.insert("Agentwatch-Prev", prev);
        headers.insert("Agentwatch-Machine", "forger");
        let id = StreamKey::unique_name("forged");
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Agentwatch-Id", id);
        self.jetstream()
            .await
            .publish_with_headers(broker.machine_subject("forger"), headers, event.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn own_server(dir: &Path) -> Box<dyn OwnServer> {
        let mut server = OwnNats {
            port: free_port(),
            dir: dir.to_path_buf(),
            process: Process(None),
        };
        server.start().await;
        Box::new(server)
    }
}

/// `nats-server -js` on a free port, its store in `dir`.
struct OwnNats {
    port: u16,
    dir: PathBuf,
    process: Process,
}

impl OwnNats {
    async fn start(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (Debian's nats-server package)");
        self.process = Process(Some(child));
        until_listening(&format!("127.0.0.1:{}", self.port)).await;
    }
}

impl OwnServer for OwnNats {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn save_to<'a>(
        &'a mut self,
        to: &'a Path,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            // A consistent copy of the store: taken while the server is down.
            self.process.kill();
            replace_dir(to, &self.dir);
            self.start().await;
        })
    }

    fn restart_from<'a>(
        &'a mut self,
        from: &'a Path,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            self.process.kill();
            replace_dir(&self.dir, from);
            self.start().await;
        })
    }
}
