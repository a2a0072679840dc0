//! Worker tasks owned by the call that spawned them. Dropped before they
//! finish — a restore step past its timeout, a cancelled job, the first
//! worker's error — every task still running is aborted (closing its
//! connection), so no detached task keeps writing into a database that is
//! being dropped or reading for a run that is over.

use tokio::task::{JoinError, JoinHandle};

pub(crate) struct Workers<T> {
    handles: Vec<JoinHandle<T>>,
}

impl<T: Send + 'static> Workers<T> {
    pub fn new() -> Self {
        Workers {
            handles: Vec::new(),
        }
    }

    pub fn spawn(&mut self, task: impl std::future::Future<Output = T> + Send + 'static) {
        self.handles.push(tokio::spawn(task));
    }

    /// Every worker's outcome, in spawn order.
    pub async fn join(mut self) -> Vec<Result<T, JoinError>> {
        let mut out = Vec::with_capacity(self.handles.len());
        for h in self.handles.iter_mut() {
            out.push(h.await);
        }
        out
    }
}

impl<T> Drop for Workers<T> {
    fn drop(&mut self) {
        // A finished task's abort is a no-op.
        for h in &self.handles {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn workers_stop_when_their_owner_is_dropped() {
        let ticks = Arc::new(AtomicU32::new(0));
        let owner = {
            let ticks = ticks.clone();
            async move {
                let mut w = Workers::new();
                w.spawn(async move {
                    loop {
                        ticks.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
                w.join().await
            }
        };
        // The owner is dropped at its timeout, as a restore step is.
        assert!(tokio::time::timeout(Duration::from_millis(50), owner)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            after,
            "a worker outlived its owner"
        );
    }
}
