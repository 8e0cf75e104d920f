//! Publish/subscribe: a wake-up signal between processes (Redis) or tasks
//! (in-process). Messages are hints, not a queue: a subscriber that was not
//! listening misses them, so receivers re-check the state they wait on.

use std::pin::Pin;

use deadpool_redis::redis;
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;

/// Messages published in-process: (full channel name, payload).
pub(crate) type LocalBus = broadcast::Sender<(String, Vec<u8>)>;

enum Inner {
    Redis(Pin<Box<dyn Stream<Item = redis::Msg> + Send>>),
    InProcess {
        rx: broadcast::Receiver<(String, Vec<u8>)>,
        channel: String,
    },
}

/// A subscription to one channel. Dropping it unsubscribes.
pub struct Subscription {
    inner: Inner,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Redis(_) => "Subscription(redis)",
            Inner::InProcess { .. } => "Subscription(in-process)",
        })
    }
}

impl Subscription {
    pub(crate) fn redis(stream: redis::aio::PubSubStream) -> Self {
        Self {
            inner: Inner::Redis(Box::pin(stream)),
        }
    }

    pub(crate) fn in_process(bus: &LocalBus, channel: String) -> Self {
        Self {
            inner: Inner::InProcess {
                rx: bus.subscribe(),
                channel,
            },
        }
    }

    /// The next message's payload; `None` when the subscription ended (the
    /// connection dropped). A receiver that fell behind gets an empty payload
    /// as a wake-up.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        match &mut self.inner {
            Inner::Redis(stream) => stream
                .next()
                .await
                .map(|msg| msg.get_payload_bytes().to_vec()),
            Inner::InProcess { rx, channel } => loop {
                match rx.recv().await {
                    Ok((c, payload)) if c == *channel => return Some(payload),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Some(Vec::new()),
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        }
    }
}
