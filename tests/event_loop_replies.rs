//! The follower's side of answers riding back on the leader's RPC replies: a batch's reply waits
//! until its entries are durable and carries the answer; a newer batch from the same leader
//! releases the older reply as it is, and the answers still waiting for a persist ride on the
//! newer one. On the leader's side, its appends never ride on a follower's reply.

use std::time::Duration;

use bytes::Bytes;
use ravel::core::{
    AppendResponse, Config, Entry, EntryPayload, Input, Message, MessageBody, RawNode, Recovered,
};
use ravel::kv::KvStateMachine;
use ravel::server::event_loop::{EventLoop, EventLoopParts, Request};
use ravel::server::hooks::Hooks;
use ravel::server::metrics::Metrics;
use ravel::server::storage_queue::{storage_queue, StorageOps, STORAGE_QUEUE_BYTES_MAX};
use ravel::server::storage_worker::{StorageDone, StorageOp};
use ravel::server::transport::Transport;
use tokio::sync::{mpsc, oneshot};

fn append(prev: u64, index: u64) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_log_index: prev,
            prev_log_term: if prev == 0 { 0 } else { 1 },
            entries: vec![Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(Bytes::from(format!("command {index}"))),
            }],
            leader_commit: 0,
            durable_everywhere: 0,
        },
    }
}

/// The persist the loop hands to storage next.
async fn next_persist(storage: &mut StorageOps) -> u64 {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), next_op(storage)).await {
            Ok(Some(StorageOp::Persist { id, .. })) => return id,
            Ok(Some(_)) => continue,
            other => panic!("no persist came: {other:?}"),
        }
    }
}

/// The next operation the loop hands to storage; `None` once the loop is gone.
async fn next_op(storage: &mut StorageOps) -> Option<StorageOp> {
    let mut batch = Vec::with_capacity(1);
    storage.recv_many(&mut batch, 1).await;
    batch.pop()
}

fn accepted(answers: &[Message]) -> Vec<u64> {
    answers
        .iter()
        .filter_map(|message| match &message.body {
            MessageBody::AppendResponse(AppendResponse::Accepted { match_index, .. }) => {
                Some(*match_index)
            }
            _ => None,
        })
        .collect()
}

async fn answered(answer: oneshot::Receiver<Vec<Message>>) -> Vec<Message> {
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("answered in time")
        .expect("the reply was sent")
}

async fn still_open(reply: &mut oneshot::Receiver<Vec<Message>>) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        matches!(reply.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
        "answered before its entries were durable"
    );
}

/// A running loop: its request queue, what it asks of storage, storage's answers, its task.
type Running = (
    mpsc::Sender<Request>,
    StorageOps,
    mpsc::UnboundedSender<StorageDone>,
    tokio::task::JoinHandle<Result<(), String>>,
);

/// Runs an event loop around `core` (cluster 7, at 127.0.0.1:1).
fn start(core: RawNode) -> Running {
    let (requests_tx, requests) = mpsc::channel(64);
    let (storage, storage_ops) = storage_queue();
    let (storage_done_tx, storage_done) = mpsc::unbounded_channel();
    let metrics = Metrics::new();
    let id = core.id();
    let event_loop = EventLoop::new(EventLoopParts {
        core,
        state: KvStateMachine::new(),
        address: "127.0.0.1:1".to_string(),
        transport: Transport::new(
            ravel::server::cluster_id::ClusterId::new(7),
            id,
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
    (requests_tx, storage_ops, storage_done_tx, running)
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_is_answered_on_its_reply_once_its_entries_are_durable() {
    let core = RawNode::new(Config::new(2, [1, 2, 3]), Recovered::default(), 0).expect("core");
    let (requests_tx, mut storage_ops, storage_done_tx, running) = start(core);

    let peer = |messages, reply| Request::Peer {
        from: 1,
        from_address: String::new(),
        messages,
        reply: Some(reply),
    };
    let durable = |id| StorageDone::Inputs(vec![Input::Persisted { id }]);

    // One batch: answered only once its entry is durable.
    let (reply, mut answer) = oneshot::channel();
    requests_tx
        .send(peer(vec![append(0, 1)], reply))
        .await
        .unwrap();
    let persist = next_persist(&mut storage_ops).await;
    still_open(&mut answer).await;
    storage_done_tx.send(durable(persist)).unwrap();
    assert_eq!(accepted(&answered(answer).await), vec![1]);

    // A second batch while the first waits: the first reply goes at once, empty; the answers to
    // both ride on the second once both entries are durable.
    let (reply_2, answer_2) = oneshot::channel();
    requests_tx
        .send(peer(vec![append(1, 2)], reply_2))
        .await
        .unwrap();
    let persist_2 = next_persist(&mut storage_ops).await;
    let (reply_3, mut answer_3) = oneshot::channel();
    requests_tx
        .send(peer(vec![append(2, 3)], reply_3))
        .await
        .unwrap();
    let persist_3 = next_persist(&mut storage_ops).await;
    assert_eq!(accepted(&answered(answer_2).await), Vec::<u64>::new());
    storage_done_tx.send(durable(persist_2)).unwrap();
    still_open(&mut answer_3).await;
    storage_done_tx.send(durable(persist_3)).unwrap();
    assert_eq!(accepted(&answered(answer_3).await), vec![2, 3]);
    running.abort();
}

/// A leader's appends never ride on the reply to a follower's RPC (open while the follower
/// passes writes on): on it an append could overtake earlier ones and be rejected. The answer
/// to the forwarded batch does ride on it.
#[tokio::test(flavor = "current_thread")]
async fn a_leaders_appends_keep_to_its_own_rpcs() {
    let mut core = RawNode::new(Config::new(1, [1, 2]), Recovered::default(), 0).expect("core");
    core.step(Input::Campaign);
    let (requests_tx, mut storage_ops, storage_done_tx, running) = start(core);
    // Storage syncs everything at once.
    tokio::spawn(async move {
        while let Some(op) = next_op(&mut storage_ops).await {
            if let StorageOp::Persist { id, .. } = op {
                let _ = storage_done_tx.send(StorageDone::Inputs(vec![Input::Persisted { id }]));
            }
        }
    });
    let from_two = |body| Message {
        from: 2,
        to: 1,
        term: 1,
        body,
    };
    let vote = from_two(MessageBody::VoteResponse {
        pre_vote: false,
        granted: true,
    });
    requests_tx
        .send(Request::Peer {
            from: 2,
            from_address: String::new(),
            messages: vec![vote],
            reply: None,
        })
        .await
        .unwrap();

    let propose = from_two(MessageBody::Propose {
        nonce: 9,
        seq: 1,
        proposals: vec![ravel::core::Proposal {
            id: 5,
            command: Bytes::from_static(b"forwarded"),
        }],
    });
    let (reply, answer) = oneshot::channel();
    requests_tx
        .send(Request::Peer {
            from: 2,
            from_address: String::new(),
            messages: vec![propose],
            reply: Some(reply),
        })
        .await
        .unwrap();
    let answers = answered(answer).await;
    let kinds: Vec<&str> = answers.iter().map(|message| message.body.kind()).collect();
    assert!(kinds.contains(&"ProposeAccepted"), "{answers:?}");
    assert!(
        !kinds.contains(&"Append") && !kinds.contains(&"Heartbeat"),
        "{answers:?}"
    );
    running.abort();
}

/// A follower told to stop while a write it passed on to the leader is unanswered must not say
/// "shutting down" (which tells a client the write was refused before it was proposed, and to
/// retry elsewhere): the leader may still commit it, and a retried put or compare-and-swap
/// would take effect twice. It answers "outcome unknown".
#[tokio::test(flavor = "current_thread")]
async fn a_write_passed_on_to_the_leader_is_unknown_when_the_follower_stops() {
    let core = RawNode::new(Config::new(2, [1, 2, 3]), Recovered::default(), 0).expect("core");
    let (requests_tx, _storage_ops, _storage_done_tx, running) = start(core);
    let heartbeat = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Heartbeat {
            commit: 0,
            round: 1,
        },
    };
    requests_tx
        .send(Request::Peer {
            from: 1,
            from_address: String::new(),
            messages: vec![heartbeat],
            reply: None,
        })
        .await
        .unwrap();
    let (reply, answer) = oneshot::channel();
    requests_tx
        .send(Request::Write {
            command: ravel::kv::Command::Put {
                key: Bytes::from("k"),
                value: Bytes::from("v"),
            }
            .encode(),
            may_forward: true,
            reply,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (stopped, _) = oneshot::channel();
    requests_tx
        .send(Request::Shutdown { reply: stopped })
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("answered in time")
        .expect("answered");
    assert!(
        matches!(outcome, Err(ravel::server::ApiError::OutcomeUnknown(_))),
        "the forwarded write was answered {outcome:?}"
    );
    running.abort();
}

/// A disk that stalls holds the loop back instead of growing its storage queue: with nothing
/// taken by the worker, the loop stops taking peer messages once the queue holds its limit in
/// bytes (the senders then find the request queue full, which clients see as "overloaded"), and
/// takes them again as soon as the worker catches up.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_disk_holds_the_loop_back() {
    let core = RawNode::new(Config::new(2, [1, 2, 3]), Recovered::default(), 0).expect("core");
    let (requests_tx, mut storage_ops, storage_done_tx, running) = start(core);
    const ENTRY_BYTES: usize = 128 << 10;
    let appends = (3 * STORAGE_QUEUE_BYTES_MAX / ENTRY_BYTES) as u64;
    let payload = Bytes::from(vec![7u8; ENTRY_BYTES]);
    let one = |index: u64| {
        let mut message = append(index - 1, index);
        if let MessageBody::Append { entries, .. } = &mut message.body {
            entries[0].payload = EntryPayload::Command(payload.clone());
        }
        Request::Peer {
            from: 1,
            from_address: String::new(),
            messages: vec![message],
            reply: None,
        }
    };
    // Offer every append; the loop takes what it will while the disk takes nothing.
    let mut next = 1;
    let mut full_for = 0;
    while next <= appends && full_for < 20 {
        match requests_tx.try_send(one(next)) {
            Ok(()) => {
                next += 1;
                full_for = 0;
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                full_for += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => panic!("the loop stopped: {error}"),
        }
    }
    let (_, queued_bytes) = storage_ops.queued();
    assert!(
        next <= appends,
        "the loop took all {appends} appends with the disk stalled ({queued_bytes} bytes queued)"
    );
    // One iteration's requests (at most 64 here, the request queue's size) may pass the limit.
    assert!(
        queued_bytes <= STORAGE_QUEUE_BYTES_MAX + 64 * (ENTRY_BYTES + 24),
        "{queued_bytes} bytes queued for a stalled disk"
    );

    // The disk catches up: the loop takes the rest.
    tokio::spawn(async move {
        while let Some(op) = next_op(&mut storage_ops).await {
            if let StorageOp::Persist { id, .. } = op {
                let _ = storage_done_tx.send(StorageDone::Inputs(vec![Input::Persisted { id }]));
            }
        }
    });
    while next <= appends {
        tokio::time::timeout(Duration::from_secs(5), requests_tx.send(one(next)))
            .await
            .expect("the loop takes requests again once the disk catches up")
            .expect("the loop is running");
        next += 1;
    }
    running.abort();
}

/// A follower told it was removed (it never receives the entry that removes it) records that
/// durably at once, so that a restart does not resume as the member it was. Before, it was
/// noticed only on a role change or a completed persist, neither of which comes to a follower
/// that is told: the real-process test of removal failed when the notice found it a follower.
#[tokio::test(flavor = "current_thread")]
async fn a_follower_told_it_was_removed_records_it() {
    let core = RawNode::new(Config::new(2, [1, 2, 3]), Recovered::default(), 0).expect("core");
    let (requests_tx, mut storage_ops, _storage_done_tx, running) = start(core);
    let from_leader = |body| Request::Peer {
        from: 1,
        from_address: String::new(),
        messages: vec![Message {
            from: 1,
            to: 2,
            term: 1,
            body,
        }],
        reply: None,
    };
    requests_tx
        .send(from_leader(MessageBody::Heartbeat {
            commit: 0,
            round: 1,
        }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    requests_tx
        .send(from_leader(MessageBody::Removed { config_index: 5 }))
        .await
        .unwrap();
    let recorded = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(op) = next_op(&mut storage_ops).await {
            if let StorageOp::RecordStanding(standing) = op {
                return Some(standing);
            }
        }
        None
    })
    .await;
    assert_eq!(
        recorded,
        Ok(Some(ravel::storage::Standing::Removed)),
        "the removal was not recorded"
    );
    running.abort();
}

/// The loop ticks the core with the present time before it hands it what woke it, not after:
/// a message judged at the last tick (up to a tick interval ago) dates a follower's promise
/// not to vote from that tick, so the promise ends early while the leader's lease, judged the
/// same way, runs late. Here a heartbeat arrives 9 ms after a tick and a vote request 5 ms after
/// a tick that falls exactly one election timeout after the stale date: dated at arrival, the
/// follower is still bound and refuses; dated at the tick, it would vote.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_message_is_judged_at_the_time_it_arrives_not_at_the_last_tick() {
    let config = Config::new(2, [1, 2, 3]);
    let timeout_ms = config.election_timeout_min_ms;
    let core = RawNode::new(config, Recovered::default(), 0).expect("core");
    let (requests_tx, mut storage_ops, storage_done_tx, running) = start(core);
    tokio::spawn(async move {
        while let Some(op) = next_op(&mut storage_ops).await {
            if let StorageOp::Persist { id, .. } = op {
                let _ = storage_done_tx.send(StorageDone::Inputs(vec![Input::Persisted { id }]));
            }
        }
    });
    let settle = || async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    };
    let peer = |from, body, reply| Request::Peer {
        from,
        from_address: String::new(),
        messages: vec![Message {
            from,
            to: 2,
            term: if from == 1 { 1 } else { 2 },
            body,
        }],
        reply,
    };
    // A tick at 500 ms, then the leader's heartbeat at 509 ms.
    tokio::time::advance(Duration::from_millis(500)).await;
    settle().await;
    tokio::time::advance(Duration::from_millis(9)).await;
    let heartbeat = MessageBody::Heartbeat {
        commit: 0,
        round: 1,
    };
    requests_tx.send(peer(1, heartbeat, None)).await.unwrap();
    settle().await;
    // A tick at 500 + timeout ms, then node 3's vote request 5 ms later.
    tokio::time::advance(Duration::from_millis(timeout_ms - 9)).await;
    settle().await;
    tokio::time::advance(Duration::from_millis(5)).await;
    let vote = MessageBody::VoteRequest {
        pre_vote: false,
        last_log_index: 0,
        last_log_term: 0,
        leadership_transfer: false,
    };
    let (reply, answer) = oneshot::channel();
    requests_tx.send(peer(3, vote, Some(reply))).await.unwrap();
    let answers = answered(answer).await;
    assert!(
        !answers.iter().any(|message| matches!(
            message.body,
            MessageBody::VoteResponse { granted: true, .. }
        )),
        "voted {} ms after hearing the leader: {answers:?}",
        timeout_ms - 4
    );
    running.abort();
}
