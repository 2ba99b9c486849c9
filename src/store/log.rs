//! Reading the event log in commit-safe order.
//!
//! `position` is taken when a row is inserted, not when its transaction commits, so a
//! reader that trusts it alone can pass an event that commits late and never see it. We
//! order by `(transaction_id, position)` and read only below the oldest transaction still
//! running (`pg_snapshot_xmin`): every transaction under that line has ended, so nothing
//! can appear behind the reader's cursor.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, Row};

/// A place in the log: the inserting transaction and the row's position within the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub transaction_id: i64,
    pub position: i64,
}

impl LogPosition {
    /// Before the first event.
    pub const START: LogPosition = LogPosition {
        transaction_id: 0,
        position: 0,
    };
}

impl std::fmt::Display for LogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.transaction_id, self.position)
    }
}

/// One row of the `events` table as a reader sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub log: LogPosition,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str =
    "transaction_id::text::bigint AS transaction_id, position, aggregate_type, \
     aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at";

pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, sqlx::Error> {
    from_row_slim(row, &[])
}

impl StoredEvent {
    /// The payload as its aggregate's event type `E`, read in place.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> serde_json::Result<E> {
        E::deserialize(&self.payload)
    }

    /// The sender of an `Inbound` delivery: the part of its id before the first `:`.
    pub fn source(&self) -> &str {
        self.aggregate_id
            .split_once(':')
            .map_or(self.aggregate_id.as_str(), |(source, _)| source)
    }
}

/// The parts of one aggregate type's payloads a reader keeps: the object keys it reads, at
/// any depth. The parser skips every other key's value without building it, which is most
/// of the cost of reading a provider's delivery that is kilobytes long for a few fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slim {
    pub aggregate_type: &'static str,
    pub keys: &'static [&'static str],
}

impl Slim {
    /// `raw` as a JSON value with only the kept keys, at every depth.
    pub fn decode(&self, raw: &str) -> serde_json::Result<Value> {
        let mut deserializer = serde_json::Deserializer::from_str(raw);
        let value = serde::de::DeserializeSeed::deserialize(Kept(self.keys), &mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }
}

/// A JSON value in which objects keep only the keys listed.
#[derive(Clone, Copy)]
struct Kept(&'static [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for Kept {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A key checked against the list without being copied: `Some` when it is kept.
struct KeptKey(&'static [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for KeptKey {
    type Value = Option<&'static str>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeptKey {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().copied().find(|kept| *kept == key))
    }
}

impl<'de> serde::de::Visitor<'de> for Kept {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key_seed(KeptKey(self.0))? {
            match key {
                Some(key) => {
                    object.insert(key.to_string(), map.next_value_seed(self)?);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// As [`from_row`], with the payloads of the aggregate types in `slim` slimmed.
pub(crate) fn from_row_slim(
    row: &sqlx::postgres::PgRow,
    slim: &[Slim],
) -> Result<StoredEvent, sqlx::Error> {
    let aggregate_type: String = row.try_get("aggregate_type")?;
    let payload = match slim
        .iter()
        .find(|slim| slim.aggregate_type == aggregate_type)
    {
        // A `json` value arrives as its text: taken as it is, it is parsed once, by `slim`.
        Some(slim) => match row.try_get_unchecked::<Option<&str>, _>("payload")? {
            // (A `jsonb` column would send a format version byte first.)
            Some(raw) => slim
                .decode(raw.strip_prefix('\u{1}').unwrap_or(raw))
                .map_err(|e| sqlx::Error::ColumnDecode {
                    index: "payload".into(),
                    source: Box::new(e),
                })?,
            None => Value::Null,
        },
        None => row
            .try_get::<Option<Value>, _>("payload")?
            .unwrap_or(Value::Null),
    };
    Ok(StoredEvent {
        log: LogPosition {
            transaction_id: row.try_get("transaction_id")?,
            position: row.try_get("position")?,
        },
        aggregate_type,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload,
        metadata: row
            .try_get::<Option<Value>, _>("metadata")?
            .unwrap_or(Value::Null),
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// Up to `limit` committed events after `after`, in log order, none of which can later be
/// preceded by an event that commits afterwards.
pub async fn read_after<'e, E: PgExecutor<'e>>(
    executor: E,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    read_after_with(executor, after, limit, None, &[]).await
}

/// The events after `$1`/`$2` in log order, `$3` at most: their payloads and metadata
/// where `$payload` holds, the rows where `$condition` holds as well.
macro_rules! log_order_query {
    ($payload:expr, $condition:expr) => {
        concat!(
            "SELECT transaction_id::text::bigint AS transaction_id, position, aggregate_type, \
               aggregate_id, sequence, event_type, event_version, recorded_at, \
               CASE WHEN ",
            $payload,
            " THEN payload END AS payload, CASE WHEN ",
            $payload,
            " THEN metadata END AS metadata \
             FROM events \
             WHERE (transaction_id, position) > ($1::bigint::text::xid8, $2) ",
            $condition,
            " ORDER BY events.transaction_id, events.position \
             LIMIT $3"
        )
    };
}

/// The payloads of the aggregate types in `$4` (null: all).
macro_rules! payloads_of {
    () => {
        "($4::text[] IS NULL OR aggregate_type = ANY($4))"
    };
}

/// Only events below the oldest transaction still running: none can commit behind them.
macro_rules! below_running {
    () => {
        "AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
    };
}

/// A delivery of one of the senders in `$5`.
macro_rules! skipped_sender {
    () => {
        "(aggregate_type = 'Inbound' AND split_part(aggregate_id, ':', 1) = ANY($5))"
    };
}

/// The query behind [`read_after_with`]: `$1`/`$2` the position to read after, `$3` the
/// limit, `$4` the aggregate types whose payloads to fetch (null: all). It orders by the
/// table's own columns so that Postgres walks `events_log_order` rather than sorting every
/// row after the position.
pub const READ_AFTER: &str = log_order_query!(payloads_of!(), below_running!());

/// As [`read_after`], but only events of `payload_types` (aggregate types) carry their payload
/// and metadata; the others come as `null`, so a reader that needs few of them does not pay
/// to fetch and parse the rest. `None` fetches every payload. `slim` keeps only part of some
/// aggregate types' payloads.
pub async fn read_after_with<'e, E: PgExecutor<'e>>(
    executor: E,
    after: LogPosition,
    limit: i64,
    payload_types: Option<&[&str]>,
    slim: &[Slim],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    read_some(READ_AFTER, executor, after, limit, payload_types, slim).await
}

/// Runs `sql`, a query with the parameters of [`READ_AFTER`].
async fn read_some<'e, E: PgExecutor<'e>>(
    sql: &'static str,
    executor: E,
    after: LogPosition,
    limit: i64,
    payload_types: Option<&[&str]>,
    slim: &[Slim],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let types: Option<Vec<String>> =
        payload_types.map(|types| types.iter().map(|t| t.to_string()).collect());
    let rows = sqlx::query(sql)
        .bind(after.transaction_id)
        .bind(after.position)
        .bind(limit)
        .bind(types)
        .fetch_all(executor)
        .await?;
    rows.iter().map(|row| from_row_slim(row, slim)).collect()
}

/// What a reader fetches from the log: which events, and which of their payloads. Several
/// readers' wants combine into one ([`Selection::union`]), so that a replay of several
/// projections reads and decodes the log once for all of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    /// The aggregate types read at all; `None` reads every event.
    pub types: Option<Vec<&'static str>>,
    /// The aggregate types whose payloads and metadata are fetched; `None` fetches all.
    pub payloads: Option<Vec<&'static str>>,
    /// Senders whose `Inbound` deliveries are skipped, or read without their payload when
    /// every event is read.
    pub skip_sources: Vec<&'static str>,
    pub slim: Vec<Slim>,
}

impl Selection {
    /// What a reader declares: the payload types it reads; whether it can skip the other
    /// events altogether; the senders whose deliveries it ignores; its slim payloads.
    pub fn of(
        payload_types: Option<&'static [&'static str]>,
        ignores_other_types: bool,
        ignores_sources: &'static [&'static str],
        slim: &'static [Slim],
    ) -> Self {
        Self {
            types: payload_types
                .filter(|_| ignores_other_types)
                .map(|types| types.to_vec()),
            payloads: payload_types.map(|types| types.to_vec()),
            skip_sources: ignores_sources.to_vec(),
            slim: slim.to_vec(),
        }
    }

    fn reads_payload_of(&self, aggregate_type: &str) -> bool {
        self.payloads
            .as_ref()
            .is_none_or(|types| types.contains(&aggregate_type))
    }

    /// Everything any of `readers` reads: an event any of them reads, a payload any of
    /// them reads, a delivery skipped (or read without its payload) only when every reader
    /// of deliveries' payloads skips it, and a slim payload only where no other reader
    /// wants that type whole.
    pub fn union(readers: &[Selection]) -> Self {
        fn merged(
            sets: impl Iterator<Item = Option<Vec<&'static str>>>,
        ) -> Option<Vec<&'static str>> {
            let mut all: Vec<&'static str> = Vec::new();
            for set in sets {
                all.extend(set?);
            }
            all.sort_unstable();
            all.dedup();
            Some(all)
        }
        let types = merged(readers.iter().map(|r| r.types.clone()));
        let payloads = merged(readers.iter().map(|r| r.payloads.clone()));
        let inbound: Vec<&Selection> = readers
            .iter()
            .filter(|r| r.reads_payload_of("Inbound"))
            .collect();
        let skip_sources = match inbound.split_first() {
            None => Vec::new(),
            Some((first, rest)) => first
                .skip_sources
                .iter()
                .copied()
                .filter(|source| rest.iter().all(|r| r.skip_sources.contains(source)))
                .collect(),
        };
        let slim = readers
            .iter()
            .flat_map(|r| r.slim.iter().map(move |slim| (r, slim)))
            .filter(|(owner, slim)| {
                readers.iter().all(|other| {
                    std::ptr::eq(other, *owner) || !other.reads_payload_of(slim.aggregate_type)
                })
            })
            .map(|(_, slim)| *slim)
            .collect();
        Self {
            types,
            payloads,
            skip_sources,
            slim,
        }
    }

    /// Whether this selection reads `event` at all.
    pub fn reads(&self, event: &StoredEvent) -> bool {
        let kind = event.aggregate_type.as_str();
        self.types.as_ref().is_none_or(|types| {
            types.contains(&kind)
                && !(kind == "Inbound" && self.skip_sources.contains(&event.source()))
        })
    }

    /// Up to `limit` events after `after` that this selection reads, in log order.
    pub async fn read_after<'e, E: PgExecutor<'e>>(
        &self,
        executor: E,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let rows = sqlx::query(READ_SELECTED)
            .bind(after.transaction_id)
            .bind(after.position)
            .bind(limit)
            .bind(self.payloads.as_deref())
            .bind(&self.skip_sources)
            .bind(self.types.as_deref())
            .fetch_all(executor)
            .await?;
        rows.iter()
            .map(|row| from_row_slim(row, &self.slim))
            .collect()
    }
}

/// The query behind [`Selection::read_after`]: as [`READ_AFTER`], with `$5` the senders
/// whose deliveries come without payload, and `$6` the aggregate types read at all (null:
/// every event; then those senders' deliveries are skipped too).
pub const READ_SELECTED: &str = log_order_query!(
    concat!(payloads_of!(), " AND NOT ", skipped_sender!()),
    concat!(
        below_running!(),
        " AND ($6::text[] IS NULL OR (aggregate_type = ANY($6) AND NOT ",
        skipped_sender!(),
        "))"
    )
);

/// The query behind [`read_in_snapshot_after`]: [`READ_AFTER`] without the line below the
/// transactions still running.
pub const READ_IN_SNAPSHOT: &str = log_order_query!(payloads_of!(), "");

/// Up to `limit` events after `after`, in log order, as the caller's snapshot shows them;
/// payloads as [`read_after_with`]. For a reader that reads up to a known end once rather
/// than following: an export in one REPEATABLE READ transaction, where every row seen is
/// committed and no other can appear; a backtest up to the last event it counted. It sees
/// what committed while a transaction that began earlier (in any database of the cluster)
/// stays open, which [`read_after`] leaves for later.
pub async fn read_in_snapshot_after<'e, E: PgExecutor<'e>>(
    executor: E,
    after: LogPosition,
    limit: i64,
    payload_types: Option<&[&str]>,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    read_some(READ_IN_SNAPSHOT, executor, after, limit, payload_types, &[]).await
}

/// The last `count` readable events, oldest first: where `events tail` starts following.
pub async fn read_last<'e, E: PgExecutor<'e>>(
    executor: E,
    count: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    last_of(
        executor,
        count,
        "WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .await
}

/// The last `count` events the caller's snapshot shows, oldest first: what `events tail
/// --no-follow` prints and where a backtest ends, which need not stay behind a transaction
/// still open.
pub async fn read_last_in_snapshot<'e, E: PgExecutor<'e>>(
    executor: E,
    count: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    last_of(executor, count, "").await
}

async fn last_of<'e, E: PgExecutor<'e>>(
    executor: E,
    count: i64,
    condition: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events {condition} \
         ORDER BY events.transaction_id DESC, events.position DESC \
         LIMIT $1"
    );
    let rows = sqlx::query(&sql).bind(count).fetch_all(executor).await?;
    let mut events = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    events.reverse();
    Ok(events)
}

/// How far a reader at `after` is behind: committed events not yet read (counted up to
/// `cap`), and when the oldest of them was recorded. Events held back by a transaction that
/// is still running elsewhere count too: that is exactly the lag to expose.
pub async fn backlog<'e, E: PgExecutor<'e>>(
    executor: E,
    after: LogPosition,
    cap: i64,
) -> Result<Backlog, sqlx::Error> {
    let row = sqlx::query(
        "WITH pending AS ( \
             SELECT recorded_at FROM events \
             WHERE (transaction_id, position) > ($1::bigint::text::xid8, $2) \
             ORDER BY events.transaction_id, events.position \
             LIMIT $3) \
         SELECT count(*) AS events, min(recorded_at) AS oldest FROM pending",
    )
    .bind(after.transaction_id)
    .bind(after.position)
    .bind(cap)
    .fetch_one(executor)
    .await?;
    Ok(Backlog {
        events: row.try_get("events")?,
        oldest: row.try_get("oldest")?,
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backlog {
    pub events: i64,
    pub oldest: Option<DateTime<Utc>>,
}

impl Backlog {
    /// Seconds since the oldest unread event was recorded; zero when there is none.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> f64 {
        self.oldest
            .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEYS: &[&str] = &["id"];
    const SLIM_INBOUND: &[Slim] = &[Slim {
        aggregate_type: "Inbound",
        keys: KEYS,
    }];
    const SLIM_PROPOSAL: &[Slim] = &[Slim {
        aggregate_type: "Proposal",
        keys: KEYS,
    }];
    const SLIM_BOTH: &[Slim] = &[SLIM_INBOUND[0], SLIM_PROPOSAL[0]];

    fn event(aggregate_type: &str, aggregate_id: &str) -> StoredEvent {
        StoredEvent {
            log: LogPosition::START,
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            sequence: 1,
            event_type: "Any".into(),
            event_version: "1".into(),
            payload: Value::Null,
            metadata: Value::Null,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn selections_combine_into_what_any_reader_reads() {
        // Counts every event, reads no payload.
        let counts = Selection::of(Some(&[]), false, &[], &[]);
        // Reads proposals whole, nothing else.
        let proposals = Selection::of(Some(&["Proposal"]), true, &[], &[]);
        // Reads deliveries but GitHub's, slim, and proposals slim.
        let canvas = Selection::of(Some(&["Inbound", "Proposal"]), true, &["github"], SLIM_BOTH);

        let all = Selection::union(&[counts.clone(), proposals.clone(), canvas.clone()]);
        assert_eq!(all.types, None, "one reader reads every event");
        assert_eq!(all.payloads, Some(vec!["Inbound", "Proposal"]));
        assert_eq!(all.skip_sources, vec!["github"]);
        assert_eq!(
            all.slim,
            SLIM_INBOUND.to_vec(),
            "proposals are wanted whole"
        );

        let some = Selection::union(&[proposals.clone(), canvas.clone()]);
        assert_eq!(some.types, Some(vec!["Inbound", "Proposal"]));
        assert!(!some.reads(&event("Inbound", "github:1")));
        assert!(some.reads(&event("Inbound", "stripe:evt_1")));
        assert!(!some.reads(&event("User", "a@example.com")));

        assert_eq!(Selection::union(std::slice::from_ref(&canvas)), canvas);

        // A reader of every delivery's payload keeps GitHub's in.
        let deliveries = Selection::of(Some(&["Inbound"]), true, &[], &[]);
        let both = Selection::union(&[canvas, deliveries]);
        assert!(both.skip_sources.is_empty());
        assert_eq!(both.slim, SLIM_PROPOSAL.to_vec());
        assert!(both.reads(&event("Inbound", "github:1")));

        // One that reads every payload leaves nothing slim.
        let whole = Selection::union(&[counts, Selection::of(None, false, &[], &[]), proposals]);
        assert_eq!((whole.types, whole.payloads), (None, None));
        assert!(whole.slim.is_empty());
    }

    #[test]
    fn a_slim_payload_keeps_the_listed_keys_at_every_depth_and_nothing_else() {
        let slim = Slim {
            aggregate_type: "Inbound",
            keys: &["data", "id", "amount", "items"],
        };
        let raw = r#"{"data": {"id": "in_1", "amount": 12, "lines": {"data": [1, 2]},
            "items": [{"id": "si_1", "price": {"id": "p"}}, 3, null, "x\"y", 1.5, true]},
            "id": "evt_1", "type": "invoice.paid"}"#;
        assert_eq!(
            slim.decode(raw).expect("valid"),
            json!({"data": {"id": "in_1", "amount": 12,
                "items": [{"id": "si_1"}, 3, null, "x\"y", 1.5, true]}, "id": "evt_1"})
        );
        for bad in ["", "{", r#"{"data": }"#, r#"{"id": 1} trailing"#] {
            assert!(slim.decode(bad).is_err(), "{bad:?} is refused");
        }
    }
}
