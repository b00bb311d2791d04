//! The node's event loop runs any `StateMachine`: here the sharded store's directory instead of
//! the key-value store, on a one-node group, with a storage stand-in that makes every write
//! durable at once. A server registers through the loop's request queue and a route is read back.

use std::time::Duration;

use ravel::core::{Config, Input, RawNode, Recovered};
use ravel::directory::{
    Directory, DirectoryAnswer, DirectoryCommand, DirectoryOutcome, DirectoryQuery,
    DirectorySettings,
};
use ravel::server::event_loop::{EventLoop, EventLoopParts, ReadResult, Request, WriteResult};
use ravel::server::hooks::Hooks;
use ravel::server::metrics::Metrics;
use ravel::server::storage_queue::storage_queue;
use ravel::server::storage_worker::{StorageDone, StorageOp};
use ravel::server::transport::Transport;
use tokio::sync::{mpsc, oneshot};

#[tokio::test]
async fn the_event_loop_runs_the_directory() {
    let mut config = Config::new(1, [1]);
    config.heartbeat_interval_ms = 20;
    config.election_timeout_min_ms = 100;
    config.election_timeout_max_ms = 200;
    let core = RawNode::new(config, Recovered::default(), 0).expect("valid");
    let (requests_tx, requests) = mpsc::channel::<Request<Directory>>(64);
    let (storage, mut storage_ops) = storage_queue();
    let (storage_done_tx, storage_done) = mpsc::unbounded_channel();
    let metrics = Metrics::new();
    let event_loop = EventLoop::new(EventLoopParts {
        core,
        state: Directory::new(DirectorySettings::default()),
        address: "127.0.0.1:1".to_string(),
        transport: Transport::new(
            ravel::server::cluster_id::ClusterId::new(7),
            1,
            "127.0.0.1:1".to_string(),
            metrics.clone(),
            requests_tx.downgrade(),
        ),
        hooks: Hooks::new(None),
        metrics,
        storage,
        storage_done,
        requests,
        leadership: tokio::sync::watch::channel(Default::default()).0,
    });
    let running = tokio::spawn(event_loop.run());
    // Storage: every persist is durable at once.
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while storage_ops.recv_many(&mut batch, 64).await > 0 {
            for op in batch.drain(..) {
                if let StorageOp::Persist { id, .. } = op {
                    let _ =
                        storage_done_tx.send(StorageDone::Inputs(vec![Input::Persisted { id }]));
                }
            }
        }
    });

    let register = DirectoryCommand::Register {
        token: 9,
        address: "10.0.0.9:7379".to_string(),
        labels: Vec::new(),
    };
    let outcome = loop {
        let (reply, answer) = oneshot::channel();
        requests_tx
            .send(Request::Write {
                command: register.encode(),
                may_forward: false,
                reply,
            })
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(Ok(WriteResult { outcome, .. }))) => break outcome,
            // Not the leader yet: the one node elects itself within its election timeout.
            Ok(Ok(Err(_))) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("no answer: {other:?}"),
        }
    };
    assert_eq!(
        outcome,
        DirectoryOutcome::Registered {
            node: 100,
            group: 1,
            leader: None,
            seeds: Vec::new(),
            partitions: 271,
        }
    );
    let (reply, answer) = oneshot::channel();
    requests_tx
        .send(Request::Read {
            query: DirectoryQuery::Server(100),
            stale: false,
            may_forward: false,
            reply,
        })
        .await
        .unwrap();
    match answer.await.unwrap() {
        Ok(ReadResult {
            value: DirectoryAnswer::Server(Some(server)),
            ..
        }) => assert_eq!(
            (server.address.as_str(), server.group),
            ("10.0.0.9:7379", 1)
        ),
        other => panic!("read: {other:?}"),
    }
    let (stopped, done) = oneshot::channel();
    requests_tx
        .send(Request::Shutdown { reply: stopped })
        .await
        .unwrap();
    done.await.unwrap();
    running.await.unwrap().unwrap();
}
