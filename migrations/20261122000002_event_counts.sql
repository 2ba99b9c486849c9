-- Events in the log by type: a small projection kept by the event_counts subscription.
CREATE TABLE event_counts
(
    aggregate_type   text        NOT NULL,
    event_type       text        NOT NULL,
    events           bigint      NOT NULL,
    last_recorded_at timestamptz NOT NULL,
    PRIMARY KEY (aggregate_type, event_type)
);
