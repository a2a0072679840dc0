//! Leader election among daemon replicas, against the in-memory API server of
//! kube-fake-client: exactly one leader; the others wait until the Lease
//! expires or is released; a deposed leader learns it on its next renewal.

use kube_fake_client::ClientBuilder;
use std::time::Duration;
use wpdr::cluster::lease::LeaderElector;

#[tokio::test]
async fn exactly_one_replica_leads_and_takeover_waits_for_expiry() {
    let client = ClientBuilder::new().build().await.unwrap();
    let a = LeaderElector::new(
        client.clone(),
        "wp",
        "wpdr-shop",
        "pod-a",
        Duration::from_secs(2),
    );
    let b = LeaderElector::new(
        client.clone(),
        "wp",
        "wpdr-shop",
        "pod-b",
        Duration::from_secs(2),
    );

    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "the first replica takes the free Lease"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "the second must not lead while it is held"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    assert_eq!(b.holder().await.unwrap().as_deref(), Some("pod-a"));

    // The holder stops renewing (crashed): after the duration, b takes over.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "an expired Lease is taken over"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "the old leader learns it lost the Lease"
    );
    assert_eq!(a.holder().await.unwrap().as_deref(), Some("pod-b"));

    // A clean release hands over at once.
    b.release().await.unwrap();
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn racing_replicas_never_both_win() {
    let client = ClientBuilder::new().build().await.unwrap();
    for round in 0..20 {
        let name = format!("race-{round}");
        let electors: Vec<LeaderElector> = (0..4)
            .map(|i| {
                LeaderElector::new(
                    client.clone(),
                    "wp",
                    &name,
                    &format!("pod-{i}"),
                    Duration::from_secs(30),
                )
            })
            .collect();
        let results =
            futures::future::join_all(electors.iter().map(|e| e.try_acquire_or_renew())).await;
        let winners = results.into_iter().filter(|r| *r.as_ref().unwrap()).count();
        assert_eq!(winners, 1, "round {round}");
    }
}
