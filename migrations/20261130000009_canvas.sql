-- The canvas: facts for the read-only analytics, kept by the `canvas` subscription from the
-- signals (`Inbound`) and the proposals. Times are when things happened (a signal's
-- `occurred_at`, an expense's `date`), never when ExecOps recorded them. Money is integer
-- minor units with a lower-case currency, and is never summed across currencies.

-- Money that moved through Stripe, one row per signal.
CREATE TABLE canvas_money
(
    inbound_id  text PRIMARY KEY,
    -- charge_succeeded, charge_failed, charge_refunded, invoice_paid, invoice_failed,
    -- payout_paid, payout_failed
    kind        text        NOT NULL,
    object_id   text        NOT NULL,
    customer    text,
    -- The invoice a charge names, if it names one (then invoice_paid already counts it).
    invoice_id  text,
    amount      bigint      NOT NULL,
    currency    text        NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX canvas_money_by_kind ON canvas_money (kind, currency, occurred_at);

-- Cash balances as reported: Stripe's `balance.available` (one row per currency of
-- `available[]`) and any source's `balance.updated` (a bank).
CREATE TABLE canvas_balances
(
    inbound_id  text        NOT NULL,
    currency    text        NOT NULL,
    source      text        NOT NULL,
    amount      bigint      NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (inbound_id, currency)
);
CREATE INDEX canvas_balances_latest ON canvas_balances (source, currency, occurred_at DESC);

-- Invoices that failed at least once, by Stripe's invoice id: a later payment marks the
-- failure recovered.
CREATE TABLE canvas_failed_invoices
(
    invoice_id      text PRIMARY KEY,
    customer        text,
    amount          bigint      NOT NULL,
    currency        text        NOT NULL,
    first_failed_at timestamptz NOT NULL,
    failures        integer     NOT NULL,
    paid_at         timestamptz
);
CREATE INDEX canvas_failed_invoices_period ON canvas_failed_invoices (first_failed_at);

-- Each subscription as last reported, with its monthly recurring revenue.
CREATE TABLE canvas_subscriptions
(
    subscription_id text PRIMARY KEY,
    customer        text,
    currency        text        NOT NULL,
    status          text        NOT NULL,
    mrr             bigint      NOT NULL,
    as_of           timestamptz NOT NULL
);

-- Every change of a subscription's MRR, from its MRR before to its MRR after.
CREATE TABLE canvas_mrr_movements
(
    inbound_id      text PRIMARY KEY,
    subscription_id text        NOT NULL,
    currency        text        NOT NULL,
    mrr_before      bigint      NOT NULL,
    mrr_after       bigint      NOT NULL,
    occurred_at     timestamptz NOT NULL
);
CREATE INDEX canvas_mrr_movements_period ON canvas_mrr_movements (currency, occurred_at);
CREATE INDEX canvas_mrr_movements_latest ON canvas_mrr_movements (subscription_id, occurred_at DESC);

-- The spend feed: `expense.recorded`, by the source's own expense id, so a corrected
-- expense replaces the one it corrects.
CREATE TABLE canvas_expenses
(
    source      text   NOT NULL,
    expense_id  text   NOT NULL,
    vendor      text   NOT NULL,
    category    text,
    amount      bigint NOT NULL,
    currency    text   NOT NULL,
    spent_on    date   NOT NULL,
    inbound_id  text   NOT NULL,
    PRIMARY KEY (source, expense_id)
);
CREATE INDEX canvas_expenses_period ON canvas_expenses (currency, spent_on);
CREATE INDEX canvas_expenses_vendor ON canvas_expenses (lower(vendor), spent_on);

-- Proposals: when drafted and decided, and how.
CREATE TABLE canvas_proposals
(
    proposal_id text PRIMARY KEY,
    action_type text        NOT NULL,
    -- The signals it was drafted from, for the currency of its outcomes.
    inbound_ids text[]      NOT NULL,
    drafted_at  timestamptz NOT NULL,
    decided_at  timestamptz,
    -- approved or rejected
    decision    text
);
CREATE INDEX canvas_proposals_decided ON canvas_proposals (decided_at) WHERE decided_at IS NOT NULL;

-- Each execution attempt's result: succeeded, failed or uncertain.
CREATE TABLE canvas_executions
(
    proposal_id text        NOT NULL,
    attempt     integer     NOT NULL,
    action_type text        NOT NULL,
    result      text        NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (proposal_id, attempt)
);
CREATE INDEX canvas_executions_period ON canvas_executions (at);

-- Outcomes attributed to executed proposals.
CREATE TABLE canvas_outcomes
(
    proposal_id text        NOT NULL,
    sequence    bigint      NOT NULL,
    action_type text        NOT NULL,
    kind        text        NOT NULL,
    value_cents bigint,
    -- The signal that showed the outcome (an invoice paid), when the event names it.
    caused_by   text,
    at          timestamptz NOT NULL,
    PRIMARY KEY (proposal_id, sequence)
);
CREATE INDEX canvas_outcomes_period ON canvas_outcomes (at);
