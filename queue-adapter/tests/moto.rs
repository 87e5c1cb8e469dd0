//! SqsQueue and Store against a real SQS/S3 protocol server (moto) on
//! loopback: the same semantics the local queue's unit tests check.

use std::time::Duration;

use earshot_queue_adapter::sqs::SqsQueue;
use earshot_queue_adapter::testing::MotoServer;
use earshot_queue_adapter::{JobQueue, Location, QueueError, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_lease_extend_release_ack_and_redrive() {
    let moto = MotoServer::start();
    let (url, dlq_url) = moto.queue_with_dlq("q", 30, 2).await;
    let q = SqsQueue::with_client(moto.sqs().await, &url);
    let dlq = SqsQueue::with_client(moto.sqs().await, &dlq_url);
    let lease = Duration::from_secs(1);

    q.send("first", &[("task".into(), "transcribe".into())])
        .await
        .unwrap();
    let d = q
        .receive(10, Duration::from_secs(2), lease)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((d.body.as_str(), d.receive_count), ("first", 1));
    assert_eq!(d.attributes["task"], "transcribe");
    // Heartbeats keep it leased past the original 1 s.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        q.extend(&d.receipt, lease).await.unwrap();
        assert!(q
            .receive(10, Duration::ZERO, lease)
            .await
            .unwrap()
            .is_empty());
    }
    // Released at once: the next receive gets it back, second delivery.
    q.release(&d.receipt, Duration::ZERO).await.unwrap();
    let d = q
        .receive(10, Duration::from_secs(2), lease)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(d.receive_count, 2);
    // Released again: max receive count 2 is spent, so SQS moves it to the DLQ.
    q.release(&d.receipt, Duration::ZERO).await.unwrap();
    assert!(q
        .receive(10, Duration::from_secs(1), lease)
        .await
        .unwrap()
        .is_empty());
    let dead = dlq
        .receive(10, Duration::from_secs(2), lease)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "first");

    q.send("second", &[]).await.unwrap();
    let d = q
        .receive(10, Duration::from_secs(2), lease)
        .await
        .unwrap()
        .remove(0);
    q.ack(&d.receipt).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap().visible + q.depth().await.unwrap().in_flight,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_round_trip_not_found_and_listing() {
    let moto = MotoServer::start();
    moto.bucket("bkt").await;
    let store = Store::with_s3_client(moto.s3().await);
    let prefix = Location::parse("s3://bkt/results/").unwrap();
    store
        .put(
            &prefix.join("j1.json"),
            b"{\"a\":1}".to_vec(),
            "application/json",
        )
        .await
        .unwrap();
    store
        .put(
            &prefix.join("j1.json"),
            b"{\"a\":2}".to_vec(),
            "application/json",
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&prefix.join("j1.json"), 100).await.unwrap(),
        b"{\"a\":2}"
    );
    assert!(matches!(
        store.get(&prefix.join("j1.json"), 3).await,
        Err(QueueError::TooLarge(_))
    ));
    let missing = store.get(&prefix.join("nope.json"), 100).await.unwrap_err();
    assert!(
        matches!(missing, QueueError::NotFound(_)) && missing.is_permanent(),
        "{missing}"
    );
    assert_eq!(store.list(&prefix).await.unwrap(), ["j1.json"]);
    // A bucket that does not exist is a service error (retried), not "not found".
    let e = store
        .put(
            &Location::parse("s3://no-such-bucket/x").unwrap(),
            vec![1],
            "application/octet-stream",
        )
        .await
        .unwrap_err();
    assert!(!e.is_permanent(), "{e}");
}
