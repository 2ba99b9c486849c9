-- Daily sums of the canvas facts, kept by the `canvas` subscription in the same transaction
-- as the facts: a question over a long range reads a row a day instead of every fact. The
-- days a batch touches are summed again from the facts, so a day always equals its facts.

-- Money in and out per day and currency, as the `burn` and `runway` queries define it.
CREATE TABLE canvas_daily_flows
(
    day      date   NOT NULL,
    currency text   NOT NULL,
    spend    bigint NOT NULL,
    revenue  bigint NOT NULL,
    refunds  bigint NOT NULL,
    PRIMARY KEY (day, currency)
);

-- MRR movements per day and currency; `net` is the sum of `mrr_after - mrr_before`, so the
-- MRR at the end of a day is the sum of `net` up to it.
CREATE TABLE canvas_daily_mrr
(
    day         date   NOT NULL,
    currency    text   NOT NULL,
    net         bigint NOT NULL,
    new         bigint NOT NULL,
    expansion   bigint NOT NULL,
    contraction bigint NOT NULL,
    churn       bigint NOT NULL,
    PRIMARY KEY (day, currency)
);

-- Spend per day, currency and vendor (matched case-insensitively by `vendor_key`).
CREATE TABLE canvas_daily_vendor_spend
(
    day        date   NOT NULL,
    currency   text   NOT NULL,
    vendor_key text   NOT NULL,
    -- The name shown: the least of the spellings seen that day.
    vendor     text   NOT NULL,
    amount     bigint NOT NULL,
    PRIMARY KEY (day, currency, vendor_key)
);

-- Decisions per day of decision, action type and whole seconds from draft to decision.
CREATE TABLE canvas_daily_decisions
(
    day         date    NOT NULL,
    action_type text    NOT NULL,
    seconds     bigint  NOT NULL,
    approved    integer NOT NULL,
    rejected    integer NOT NULL,
    PRIMARY KEY (day, action_type, seconds)
);

-- Outcomes per day, action type, kind and currency ('' when no signal names one).
CREATE TABLE canvas_daily_outcomes
(
    day         date   NOT NULL,
    action_type text   NOT NULL,
    kind        text   NOT NULL,
    currency    text   NOT NULL,
    outcomes    bigint NOT NULL,
    -- null when no outcome of the group carries a value
    value       bigint,
    PRIMARY KEY (day, action_type, kind, currency)
);

-- Execution attempts per day they ended and adapter (the action type's prefix).
CREATE TABLE canvas_daily_executions
(
    day       date    NOT NULL,
    adapter   text    NOT NULL,
    succeeded integer NOT NULL,
    failed    integer NOT NULL,
    uncertain integer NOT NULL,
    PRIMARY KEY (day, adapter)
);

-- The questions read the daily sums now, not these.
DROP INDEX canvas_money_by_kind;
DROP INDEX canvas_expenses_period;
DROP INDEX canvas_expenses_vendor;
DROP INDEX canvas_mrr_movements_period;
DROP INDEX canvas_mrr_movements_latest;

-- What summing a day again reads.
CREATE INDEX canvas_money_by_day ON canvas_money (kind, occurred_at);
CREATE INDEX canvas_money_refunds ON canvas_money (object_id) WHERE kind = 'charge_refunded';
CREATE INDEX canvas_expenses_by_day ON canvas_expenses (spent_on);
CREATE INDEX canvas_mrr_movements_by_day ON canvas_mrr_movements (occurred_at);

-- The canvas is a projection: it starts again from the first event and fills the daily
-- sums as it goes, rather than this file repeating how a day is summed.
TRUNCATE canvas_money, canvas_balances, canvas_failed_invoices, canvas_subscriptions,
    canvas_mrr_movements, canvas_expenses, canvas_proposals, canvas_executions, canvas_outcomes;
DELETE FROM subscription_checkpoints WHERE name = 'canvas';
