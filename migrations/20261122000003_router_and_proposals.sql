-- The router's own state, written in the same transaction as its checkpoint.

-- The proposal each subject maps to, and whether it is still pending.
CREATE TABLE router_subjects
(
    subject_key text PRIMARY KEY,
    proposal_id text    NOT NULL,
    pending     boolean NOT NULL
);

CREATE TABLE router_proposals
(
    proposal_id text PRIMARY KEY,
    action_type text NOT NULL,
    subject_key text NOT NULL
);

-- Decisions by action type, for precision.
CREATE TABLE router_decisions
(
    proposal_id text PRIMARY KEY,
    action_type text        NOT NULL,
    approved    boolean     NOT NULL,
    decided_at  timestamptz NOT NULL
);
CREATE INDEX router_decisions_by_type ON router_decisions (action_type, decided_at DESC);

CREATE TABLE router_action_types
(
    action_type text PRIMARY KEY,
    disabled    boolean     NOT NULL,
    changed_at  timestamptz NOT NULL
);

-- Facts the policies look up.
CREATE TABLE facts_vendor_spend
(
    vendor   text   NOT NULL,
    month    date   NOT NULL,
    currency text   NOT NULL,
    cents    bigint NOT NULL,
    PRIMARY KEY (vendor, month, currency)
);

-- kind: 'spend' or 'revenue'.
CREATE TABLE facts_monthly
(
    kind     text   NOT NULL,
    month    date   NOT NULL,
    currency text   NOT NULL,
    cents    bigint NOT NULL,
    PRIMARY KEY (kind, month, currency)
);

-- The latest balance each source reported.
CREATE TABLE facts_cash
(
    source   text        NOT NULL,
    currency text        NOT NULL,
    cents    bigint      NOT NULL,
    as_of    timestamptz NOT NULL,
    PRIMARY KEY (source, currency)
);

CREATE TABLE facts_deals
(
    deal_id      text PRIMARY KEY,
    amount_cents bigint NOT NULL
);

-- Every proposal as it stands: the inbox and Today's Moves read it.
CREATE TABLE proposal_summaries
(
    id                text PRIMARY KEY,
    status            text        NOT NULL,
    vertical          text        NOT NULL,
    action_type       text        NOT NULL,
    title             text        NOT NULL,
    reasoning         text        NOT NULL,
    drivers           jsonb       NOT NULL,
    score             integer     NOT NULL,
    urgency           text        NOT NULL,
    urgency_rank      integer     NOT NULL,
    due_by            timestamptz,
    owner             text,
    subject_key       text        NOT NULL,
    inbound_ids       jsonb       NOT NULL,
    action            jsonb       NOT NULL,
    payload_hash      text        NOT NULL,
    suppressed_reason text,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX proposal_summaries_newest ON proposal_summaries (status, created_at DESC, id);
CREATE INDEX proposal_summaries_ranked ON proposal_summaries (status, score DESC, id);

-- Pending proposals, newest signals first.
CREATE VIEW inbox AS
SELECT *
FROM proposal_summaries
WHERE status = 'pending';

-- Today's Moves: pending, due within 24 hours first, then by score.
CREATE VIEW command_queue AS
SELECT *, (due_by IS NOT NULL AND due_by <= now() + interval '24 hours') AS due_soon
FROM proposal_summaries
WHERE status = 'pending';
