//! One node of a cluster fed through Redis Streams or NATS JetStream (features `redis`,
//! `nats`).
//!
//! ```sh
//! # two producers (machines), each a simulated monitor publishing into the stream, serving too
//! cargo run --example broker_node -- --port 3101 --publish alice
//! cargo run --example broker_node -- --port 3102 --publish bob
//! # one more node, serving both machines' sessions from the broker only
//! cargo run --example broker_node -- --port 3103
//! # the same on NATS JetStream (`nats-server -js`)
//! cargo run --example broker_node -- --nats nats://127.0.0.1:4222 --port 3201 --publish alice
//! ```
//!
//! `--help` lists the flags. Every node serves the same events on
//! `ws://127.0.0.1:<port>/ws`, with the same `seq` and `at`, so a client may resume with
//! `?since=` on any of them.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use agentwatch_ws::broker::{Broker, BrokerError, BrokerSink, Follower, NatsBroker, RedisBroker};
use agentwatch_ws::{Event, EventSink, SessionState, WsLayer};
use axum::Router;

/// The command line (`--help` lists it).
#[derive(clap::Parser)]
#[command(about = "One node of a cluster fed through Redis Streams or NATS JetStream")]
struct Args {
    /// The Redis broker (the default engine).
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// A NATS JetStream broker instead of Redis.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// The stream key.
    #[arg(long, value_name = "KEY", default_value = "agentwatch:events")]
    stream: String,
    /// Port to listen on, on 127.0.0.1.
    #[arg(long, value_name = "N", default_value_t = 3101)]
    port: u16,
    /// Also run a simulated monitor and publish it into the stream as this machine (one
    /// live producer per machine name; any number of machines per stream).
    #[arg(long, value_name = "MACHINE")]
    publish: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Args = clap::Parser::parse();
    let stream = args.stream.clone();
    match args.nats.clone() {
        Some(url) => run(args, "nats", || NatsBroker::open(&url, stream.clone())).await,
        None => {
            let url = args.redis.clone();
            run(args, "redis", || RedisBroker::open(&url, stream.clone())).await
        }
    }
}

/// Serves one node on the engine `open` opens.
async fn run<B: Broker>(
    args: Args,
    engine: &'static str,
    open: impl Fn() -> Result<B, BrokerError>,
) -> ExitCode {
    let Args {
        stream,
        port,
        publish,
        ..
    } = args;
    let open = || match open() {
        Ok(broker) => Some(broker),
        Err(error) => {
            eprintln!("{error}");
            None
        }
    };

    let (ws_router, publisher) = WsLayer::new().build("/ws");
    // Producer or not, every node serves from the broker: one code path for all of them.
    let Some(broker) = open() else {
        return ExitCode::from(2);
    };
    let follower = Follower::new(broker, publisher).spawn();
    if let Some(machine) = &publish {
        let Some(broker) = open() else {
            return ExitCode::from(2);
        };
        let monitor = BrokerSink::builder(broker)
            .machine(machine.as_str())
            .spawn();
        if let Err(error) = monitor.started().await {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
        tokio::spawn(simulate(monitor, machine.clone()));
    }
    tracing::info!(engine, %stream, publish = publish.as_deref().unwrap_or(""), "waiting for the broker's state");
    follower.ready().await;

    let app = Router::new().merge(ws_router);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {addr}: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("serving ws://{addr}/ws");
    if let Err(error) = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    {
        eprintln!("server error: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Stand-in for the real monitor: three sessions taking turns, one event a second. Starts
/// with a snapshot, as a restarted monitor does (seqs start over at 1).
async fn simulate(monitor: BrokerSink, machine: String) {
    let mut sessions: Vec<SessionState> = ["a8d0e2f4", "b71c93d0", "c05e44aa"]
        .into_iter()
        .map(|id| SessionState {
            id: format!("{machine}-{id}"),
            source: "claude".into(),
            ..Default::default()
        })
        .collect();
    let _ = monitor.handle_event(&Event::snapshot(1, sessions.clone()));
    for seq in 2.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let session = &mut sessions[seq as usize % 3];
        session.message_count += 1;
        if let Err(error) = monitor.handle_event(&Event::delta(seq, vec![session.clone()], vec![]))
        {
            tracing::error!(%error, "publish failed");
        }
    }
}
