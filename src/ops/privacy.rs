//! What ExecOps holds about one data subject (an email address, a Stripe customer id, any
//! identifier a sender uses), for an access request (GDPR Art. 15): every event whose payload
//! or metadata mentions it, in log order, and every row of every other table that does.
//!
//! It reads everything once, comparing case-insensitively; for a log of millions of events
//! that is a scan of the table, which is fine for a request a person makes now and then.
//! Secrets (password, token, session and link hashes, CSRF tokens) are never printed.

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgPool;

/// Columns that hold a secret or a hash of one: shown as `[secret]`.
const SECRET_COLUMNS: &[&str] = &[
    "password_hash",
    "token_hash",
    "id_hash",
    "csrf_token",
    "key",
    "secret",
];

/// Tables that are bookkeeping, not data about anyone: the schema's history and the
/// subscriptions' checkpoints and locks.
const NOT_ABOUT_ANYONE: &[&str] = &[
    "_sqlx_migrations",
    "subscription_checkpoints",
    "approval_link_keys",
    "events",
];

/// Everything held about a subject.
#[derive(Debug, Serialize)]
pub struct Export {
    pub subject: String,
    pub generated_at: chrono::DateTime<chrono::Utc>,
    /// The events that mention the subject, in log order.
    pub events: Vec<Value>,
    /// The rows of each other table that mention it, by table.
    pub records: Map<String, Value>,
}

/// Every event and row that mentions `subject`.
pub async fn export(
    pool: &PgPool,
    subject: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Export, ExportError> {
    let subject = subject.trim();
    if subject.chars().count() < 3 {
        return Err(ExportError::TooShort(subject.to_string()));
    }
    let events: Vec<Value> = sqlx::query_scalar(
        "SELECT jsonb_build_object( \
            'aggregate_type', aggregate_type, 'aggregate_id', aggregate_id, \
            'sequence', sequence, 'event_type', event_type, 'recorded_at', recorded_at, \
            'payload', payload, 'metadata', metadata) \
         FROM events \
         WHERE strpos(lower(payload::text), lower($1)) > 0 \
            OR strpos(lower(metadata::text), lower($1)) > 0 \
            OR lower(aggregate_id) = lower($1) \
         ORDER BY transaction_id, position",
    )
    .bind(subject)
    .fetch_all(pool)
    .await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .fetch_all(pool)
    .await?;
    let mut records = Map::new();
    for table in tables
        .iter()
        .filter(|t| !NOT_ABOUT_ANYONE.contains(&t.as_str()))
    {
        let rows: Vec<Value> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t) FROM {} t WHERE strpos(lower(to_jsonb(t)::text), lower($1)) > 0",
            crate::store::quote_ident(table)
        ))
        .bind(subject)
        .fetch_all(pool)
        .await?;
        if !rows.is_empty() {
            records.insert(
                table.clone(),
                Value::Array(rows.into_iter().map(without_secrets).collect()),
            );
        }
    }
    Ok(Export {
        subject: subject.to_string(),
        generated_at: now,
        events: events.into_iter().map(without_secrets).collect(),
        records,
    })
}

/// `value` with every secret column's value replaced, at any depth.
fn without_secrets(value: Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .map(|(key, value)| {
                    if SECRET_COLUMNS.contains(&key.as_str()) {
                        (key, Value::String("[secret]".into()))
                    } else {
                        (key, without_secrets(value))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_secrets).collect()),
        other => other,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0:?} is too short to look for: give an email address or an id")]
    TooShort(String),
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_at_any_depth_and_nothing_else_is() {
        let row = serde_json::json!({
            "email": "ana@example.com",
            "password_hash": "$argon2id$…",
            "nested": [{"token_hash": "abc", "note": "kept"}],
        });
        assert_eq!(
            without_secrets(row),
            serde_json::json!({
                "email": "ana@example.com",
                "password_hash": "[secret]",
                "nested": [{"token_hash": "[secret]", "note": "kept"}],
            })
        );
    }
}
