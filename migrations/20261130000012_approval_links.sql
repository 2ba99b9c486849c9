-- Email approval links: the key they are signed with when EXECOPS_LINK_SECRET is unset,
-- the links already used, and the approval emails already sent.

-- One row: generated at first start and shared by every `execops serve` on this database,
-- so a link sent by one process verifies on any other and across restarts.
CREATE TABLE approval_link_keys
(
    id         smallint PRIMARY KEY CHECK (id = 1),
    secret     bytea       NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A link's nonce, once its POST got this far: the primary key makes a link single-use, and
-- two simultaneous POSTs of one link decide once.
CREATE TABLE used_approval_links
(
    nonce       text PRIMARY KEY,
    proposal_id text        NOT NULL,
    approver    text        NOT NULL,
    -- approve or reject
    decision    text        NOT NULL,
    -- What came of it: decided, or why it was refused.
    outcome     text        NOT NULL,
    used_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per approval email handed to the mail server (or refused by it for good), so a
-- notifier that restarts after a crash does not send it again.
CREATE TABLE approval_emails
(
    proposal_id text        NOT NULL,
    approver    text        NOT NULL,
    -- `drafted`, or `escalated:{level}`
    reason      text        NOT NULL,
    message_id  text        NOT NULL,
    -- Null when the mail server took it; its refusal otherwise.
    failure     text,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (proposal_id, approver, reason)
);
