-- The audit log: one row per event that is not a raw delivery, in log order, each chained
-- to the one before by `hash = sha256(prev_hash, canonical row)`. Kept by the `audit_log`
-- subscription; `execops audit verify` recomputes the chain from the events.
CREATE TABLE audit_log
(
    seq            bigint PRIMARY KEY CHECK (seq > 0),
    transaction_id bigint      NOT NULL,
    position       bigint      NOT NULL,
    recorded_at    timestamptz NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_type     text        NOT NULL,
    actor          text        NOT NULL,
    role           text,
    from_status    text,
    to_status      text,
    -- sha256 of the event's payload and metadata in canonical JSON.
    event_digest   text        NOT NULL,
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL
);
CREATE UNIQUE INDEX audit_log_event ON audit_log (transaction_id, position);
CREATE INDEX audit_log_stream ON audit_log (aggregate_type, aggregate_id, seq DESC);
CREATE INDEX audit_log_recent ON audit_log (recorded_at DESC, seq DESC);
