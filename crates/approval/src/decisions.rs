//! One decision subscriber per manager (shared by its clones): a single
//! cache subscription fans decision wake-ups out to every waiter, so waiters
//! cost no connection each.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::broadcast;
use tracing::debug;
use warden_cache::Cache;

/// The one channel every decision is announced on; the payload is the
/// token's hash (a hint: waiters re-read the database).
pub(crate) const CHANNEL: &str = "approval:decided";

/// The channel that says the set of pending approvals changed (one was
/// issued, decided or expired); the payload is the approval's id, or
/// `expired` after a sweep. A hint for live views: they re-read.
pub const INBOX_CHANNEL: &str = "approval:inbox";

/// Fans one subscription out to many waiters.
#[derive(Debug)]
pub(crate) struct DecisionHub {
    tx: broadcast::Sender<Vec<u8>>,
    started: Mutex<bool>,
}

impl DecisionHub {
    pub(crate) fn new() -> Arc<Self> {
        let (tx, _) = broadcast::channel(1024);
        Arc::new(Self {
            tx,
            started: Mutex::new(false),
        })
    }

    /// A receiver of decided token hashes. Starts the shared subscription
    /// on first use; it reconnects on its own and ends when the last manager
    /// sharing this hub is dropped.
    pub(crate) fn listen(self: &Arc<Self>, cache: &Cache) -> broadcast::Receiver<Vec<u8>> {
        let rx = self.tx.subscribe();
        let mut started = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*started {
            *started = true;
            tokio::spawn(run(Arc::downgrade(self), cache.clone()));
        }
        rx
    }
}

async fn run(hub: Weak<DecisionHub>, cache: Cache) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match cache.subscribe(CHANNEL).await {
            Ok(mut subscription) => {
                backoff = Duration::from_millis(100);
                loop {
                    tokio::select! {
                        message = subscription.next() => match message {
                            Some(payload) => match hub.upgrade() {
                                // No receiver is fine: nobody is waiting.
                                Some(hub) => { let _ = hub.tx.send(payload); }
                                None => return,
                            },
                            None => break,
                        },
                        () = tokio::time::sleep(Duration::from_secs(5)) => {
                            if hub.strong_count() == 0 {
                                return;
                            }
                        }
                    }
                }
                debug!("decision subscription ended; reconnecting");
            }
            Err(e) => debug!(error = %e, "no decision subscription; waiters poll the database"),
        }
        if hub.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
