//! One `LISTEN` per process. A single connection of its own (never one of the request
//! pool's) listens on every channel ExecOps notifies, and fans each notice out to whoever
//! waits: the subscriptions, the executor and every open inbox stream. A thousand open pages
//! cost one connection, not a thousand.
//!
//! Notices are hints, never the data: whoever wakes reads the log or its tables. A notice
//! that may have been lost (a waiter fell behind, or the connection dropped and came back)
//! is told as [`Notice::Missed`], and every waiter also has a slow poll of its own.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{broadcast, watch};

use super::subscription::{CHECKPOINTS_CHANNEL, EVENTS_CHANNEL};

/// The channel the executor's job queue notifies.
pub use crate::executor::JOBS_CHANNEL;

const CHANNELS: [&str; 3] = [EVENTS_CHANNEL, CHECKPOINTS_CHANNEL, JOBS_CHANNEL];

/// Notices held for a waiter that has not read them yet; one further behind is told
/// [`Notice::Missed`] instead. Each is a channel and a short payload.
const BUFFER: usize = 1024;

/// What woke a waiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A notification on `channel` with its payload.
    Told {
        channel: &'static str,
        payload: Arc<str>,
    },
    /// Notices may have been lost: look at everything.
    Missed,
}

impl Notice {
    /// Whether this notice may be about `channel` (and, when given, `payload`).
    pub fn concerns(&self, channel: &str, payload: Option<&str>) -> bool {
        match self {
            Notice::Told {
                channel: c,
                payload: p,
            } => *c == channel && payload.is_none_or(|want| want == &**p),
            Notice::Missed => true,
        }
    }
}

/// The process's listener. Cheap to clone; the listening task ends with the last clone.
#[derive(Clone)]
pub struct Notifications {
    sender: broadcast::Sender<Notice>,
    _alive: Arc<watch::Sender<()>>,
}

impl Notifications {
    /// Starts listening on a connection of its own, made with `options`.
    pub fn start(options: PgConnectOptions) -> Self {
        let (sender, _) = broadcast::channel(BUFFER);
        let (alive, dropped) = watch::channel(());
        tokio::spawn(listen(options, sender.clone(), dropped));
        Self {
            sender,
            _alive: Arc::new(alive),
        }
    }

    /// A waiter that sees every notice from now on.
    pub fn subscribe(&self) -> Wakeups {
        Wakeups {
            receiver: self.sender.subscribe(),
        }
    }

    /// How many waiters there are (open streams, subscriptions, the executor).
    pub fn waiters(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// One waiter's view of the notices.
pub struct Wakeups {
    receiver: broadcast::Receiver<Notice>,
}

impl Wakeups {
    /// The next notice. When the listener has ended for good, this waits forever: the
    /// waiter's own poll still runs.
    pub async fn recv(&mut self) -> Notice {
        match self.receiver.recv().await {
            Ok(notice) => notice,
            Err(broadcast::error::RecvError::Lagged(_)) => Notice::Missed,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }

    /// The next notice that concerns `channel` (and `payload`, when given).
    pub async fn wait_for(&mut self, channel: &str, payload: Option<&str>) {
        while !self.recv().await.concerns(channel, payload) {}
    }

    /// Drops the notices already waiting, so that a burst wakes the waiter once.
    pub fn drain(&mut self) {
        while !matches!(
            self.receiver.try_recv(),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
        ) {}
    }
}

async fn listen(
    options: PgConnectOptions,
    sender: broadcast::Sender<Notice>,
    mut dropped: watch::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            // A pool of one, of its own: sqlx's listener takes its connection from a pool,
            // and this one must never be the request pool's.
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_lazy_with(options.clone());
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all(CHANNELS).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = dropped.changed() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot listen for notifications; waiters poll meanwhile");
                    tokio::select! {
                        _ = dropped.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        };
        backoff = Duration::from_millis(100);
        // Whatever was told while nobody listened is lost: everyone looks.
        let _ = sender.send(Notice::Missed);
        loop {
            let received = tokio::select! {
                _ = dropped.changed() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    let Some(channel) = CHANNELS.into_iter().find(|c| *c == notification.channel())
                    else {
                        continue;
                    };
                    let _ = sender.send(Notice::Told {
                        channel,
                        payload: Arc::from(notification.payload()),
                    });
                }
                // The connection dropped; sqlx reconnects on the next call.
                Ok(None) => {
                    let _ = sender.send(Notice::Missed);
                }
                Err(error) => {
                    tracing::warn!(%error, "lost the notification listener; reconnecting");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_concerns_its_channel_and_payload_and_a_missed_one_concerns_all() {
        let told = Notice::Told {
            channel: CHECKPOINTS_CHANNEL,
            payload: Arc::from("proposals"),
        };
        assert!(told.concerns(CHECKPOINTS_CHANNEL, Some("proposals")));
        assert!(told.concerns(CHECKPOINTS_CHANNEL, None));
        assert!(!told.concerns(CHECKPOINTS_CHANNEL, Some("users")));
        assert!(!told.concerns(EVENTS_CHANNEL, None));
        assert!(Notice::Missed.concerns(JOBS_CHANNEL, Some("anything")));
    }
}
