//! Live inbox pages. Every open stream waits on the process's one listener
//! ([`Notifications`]) and holds no database connection; how many may be open is bounded in
//! all and per browser session. A page over either bound is told so once and falls back to
//! showing what it loaded (and says so), rather than retrying.
//!
//! One task per process watches the listener for commits of the proposals projection and
//! counts them in a `watch`: a stream wakes only for those, however many other notices
//! pass, and a page is told of changes at most once every [`LEAST_INTERVAL`] (the first
//! change after a quiet spell at once, a burst as one more event when the interval is up),
//! so a busy hour costs each open page one refresh per interval.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::store::notifications::{Notifications, Wakeups};

/// The least time between two `proposals` events of one stream.
pub const LEAST_INTERVAL: Duration = Duration::from_secs(2);
use crate::store::subscription::CHECKPOINTS_CHANNEL;

/// The open streams, and the listener they wait on.
#[derive(Clone)]
pub struct LiveStreams {
    /// How many times the proposals projection has committed since the process started.
    commits: watch::Receiver<u64>,
    total: Arc<Semaphore>,
    per_session: Arc<Mutex<HashMap<String, usize>>>,
    per_session_cap: usize,
}

/// One stream's place: its share of both bounds, given back when the stream ends.
pub struct Seat {
    _total: OwnedSemaphorePermit,
    session: String,
    per_session: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Ok(mut open) = self.per_session.lock() {
            if let Some(count) = open.get_mut(&self.session) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&self.session);
                }
            }
        }
    }
}

/// Why a stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    Everyone(usize),
    Session(usize),
}

impl Full {
    fn text(&self) -> String {
        match self {
            Full::Everyone(cap) => format!(
                "live updates are paused: {cap} pages are open on this server already; reload to see changes"
            ),
            Full::Session(cap) => format!(
                "live updates are paused: {cap} of your pages are open already; close one, or reload to see changes"
            ),
        }
    }
}

impl LiveStreams {
    pub fn new(notifications: Notifications, limits: &Limits) -> Self {
        let (counter, commits) = watch::channel(0);
        tokio::spawn(count_commits(notifications.subscribe(), counter));
        Self {
            commits,
            total: Arc::new(Semaphore::new(limits.live_streams)),
            per_session: Arc::default(),
            per_session_cap: limits.live_streams_per_session,
        }
    }

    /// A seat for a stream of `session` (its id hash), if both bounds allow one more.
    pub fn seat(&self, session: &str) -> Result<Seat, Full> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Everyone(self.capacity()))?;
        let mut open = self
            .per_session
            .lock()
            .map_err(|_| Full::Session(self.per_session_cap))?;
        let count = open.entry(session.to_string()).or_default();
        if *count >= self.per_session_cap {
            return Err(Full::Session(self.per_session_cap));
        }
        *count += 1;
        Ok(Seat {
            _total: total,
            session: session.to_string(),
            per_session: self.per_session.clone(),
        })
    }

    /// How many streams may be open in all.
    pub fn capacity(&self) -> usize {
        self.total.available_permits() + self.open()
    }

    /// How many streams are open now.
    pub fn open(&self) -> usize {
        self.per_session
            .lock()
            .map(|open| open.values().sum())
            .unwrap_or(0)
    }

    /// The inbox's event stream for `session`: a `proposals` event each time the proposals
    /// projection commits, or one `paused` event saying why there is no live stream.
    pub fn inbox(&self, session: &str, shutdown: watch::Receiver<bool>) -> Response {
        match self.seat(session) {
            Ok(seat) => sse(changes(self.commits.clone(), seat, shutdown)),
            Err(full) => {
                let paused = Event::default().event("paused").data(full.text());
                sse(stream::once(async move { Ok(paused) }))
            }
        }
    }
}

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
        .into_response()
}

/// Counts the proposals projection's commits into `counter`, until no stream can read it.
async fn count_commits(mut wakeups: Wakeups, counter: watch::Sender<u64>) {
    loop {
        tokio::select! {
            _ = counter.closed() => return,
            _ = wakeups.wait_for(CHECKPOINTS_CHANNEL, Some("proposals")) => {
                wakeups.drain();
                counter.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}

/// A `proposals` event after the proposals projection commits, at most one every
/// [`LEAST_INTERVAL`]; the commits of a burst are one event.
fn changes(
    mut commits: watch::Receiver<u64>,
    seat: Seat,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    commits.mark_unchanged();
    stream::unfold(
        (commits, seat, shutdown, None),
        |(mut commits, seat, mut shutdown, last): (_, _, _, Option<tokio::time::Instant>)| async move {
            if *shutdown.borrow() {
                return None;
            }
            let next = async {
                commits.changed().await.ok()?;
                if let Some(last) = last {
                    tokio::time::sleep_until(last + LEAST_INTERVAL).await;
                }
                commits.mark_unchanged();
                Some(())
            };
            tokio::select! {
                _ = shutdown.changed() => None,
                next = next => {
                    next?;
                    let event = Event::default().event("proposals").data("changed");
                    Some((Ok(event), (commits, seat, shutdown, Some(tokio::time::Instant::now()))))
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(total: usize, per_session: usize) -> LiveStreams {
        let options = "postgres://nobody@127.0.0.1:1/none"
            .parse()
            .expect("options");
        let limits = Limits {
            live_streams: total,
            live_streams_per_session: per_session,
            ..crate::config::Config::from_lookup(|_| None)
                .expect("defaults")
                .limits
        };
        LiveStreams::new(Notifications::start(options), &limits)
    }

    /// Whether `events` stays silent for `within`.
    async fn quiet(events: &mut (impl Stream + Unpin), within: Duration) -> bool {
        use futures::StreamExt;
        tokio::time::timeout(within, events.next()).await.is_err()
    }

    #[tokio::test]
    async fn a_burst_of_commits_is_one_event_now_and_one_more_after_the_interval() {
        use futures::StreamExt;
        let live = streams(3, 3);
        let seat = live.seat("a").expect("a seat");
        let (counter, commits) = watch::channel(0u64);
        let (_stop, shutdown) = watch::channel(false);
        let mut events = Box::pin(changes(commits, seat, shutdown));
        assert!(
            quiet(&mut events, Duration::from_millis(200)).await,
            "no commit, no event"
        );
        counter.send_modify(|n| *n += 1);
        let started = std::time::Instant::now();
        assert!(events.next().await.is_some(), "the first commit is told");
        for _ in 0..50 {
            counter.send_modify(|n| *n += 1);
        }
        assert!(events.next().await.is_some(), "the burst is told");
        assert!(
            started.elapsed() >= LEAST_INTERVAL,
            "the burst waited for the interval: {:?}",
            started.elapsed()
        );
        assert!(
            quiet(&mut events, LEAST_INTERVAL + Duration::from_millis(500)).await,
            "fifty commits are one event"
        );
    }

    #[tokio::test]
    async fn seats_are_bounded_per_session_and_in_all_and_given_back_when_a_stream_ends() {
        let live = streams(3, 2);
        let a1 = live.seat("a").expect("a first seat");
        let _a2 = live.seat("a").expect("a second seat");
        assert_eq!(live.seat("a").err(), Some(Full::Session(2)));
        let _b1 = live.seat("b").expect("another session's seat");
        assert_eq!(live.seat("c").err(), Some(Full::Everyone(3)));
        assert_eq!(live.open(), 3);
        drop(a1);
        assert_eq!(live.open(), 2);
        let _a3 = live.seat("a").expect("a seat given back is taken again");
        assert_eq!(live.capacity(), 3);
    }
}
