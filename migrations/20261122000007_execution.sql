-- Execution: the executor's queue and attempts, what the inbox shows of executions, and the
-- outcome attributor's watches.

ALTER TABLE proposal_summaries
    ADD COLUMN waiting_reason text,
    ADD COLUMN waiting_until  timestamptz,
    ADD COLUMN last_error     text,
    ADD COLUMN executed_at    timestamptz,
    ADD COLUMN outcome        text;

CREATE INDEX proposal_summaries_in_flight ON proposal_summaries (updated_at DESC)
    WHERE status IN ('approved', 'executing', 'failed', 'uncertain');

-- Approved proposals the executor still has to act on. Written by the `executor`
-- subscription from `Approved`/`RetryRequested`; the executor deletes a row once the
-- proposal's own stream says there is nothing left to do.
CREATE TABLE execution_jobs (
    proposal_id text        PRIMARY KEY,
    approved_at timestamptz NOT NULL,
    due_at      timestamptz NOT NULL DEFAULT now(),
    -- The guardrail holding it back, so the hold is recorded once, not at every look.
    held_by     text
);

CREATE INDEX execution_jobs_due ON execution_jobs (due_at);

-- One row per attempt, for rate limits and circuit breakers: operational state kept by
-- the executor, not a projection (the events say the same, at more cost to ask).
CREATE TABLE execution_attempts (
    proposal_id text        NOT NULL,
    attempt     integer     NOT NULL,
    action_type text        NOT NULL,
    adapter     text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    -- ok, transient (timeouts, 429, 5xx: these trip the circuit breaker) or permanent.
    outcome     text,
    PRIMARY KEY (proposal_id, attempt)
);

CREATE INDEX execution_attempts_by_type ON execution_attempts (action_type, started_at DESC);
CREATE INDEX execution_attempts_by_adapter ON execution_attempts (adapter, finished_at DESC)
    WHERE finished_at IS NOT NULL;

-- Executed proposals waiting for the signal that shows they worked.
CREATE TABLE outcome_watches (
    proposal_id text        PRIMARY KEY,
    outcome_key text        NOT NULL,
    action_type text        NOT NULL,
    executed_at timestamptz,
    recorded    boolean     NOT NULL DEFAULT false
);

CREATE INDEX outcome_watches_open ON outcome_watches (outcome_key) WHERE NOT recorded;

-- Per action type: executions, and those with a recorded outcome; feeds the priority score.
CREATE TABLE outcome_rates (
    action_type  text   PRIMARY KEY,
    executed     bigint NOT NULL DEFAULT 0,
    with_outcome bigint NOT NULL DEFAULT 0
);
