-- Single-use, expiring links that let a person in: an invite sets the first password of a
-- person not yet added, a reset sets a new one. Only the SHA-256 of the link's secret is
-- kept. Operational state like sessions, not a read model: redeeming one records the event.
CREATE TABLE account_links
(
    token_hash text PRIMARY KEY,
    email      text        NOT NULL,
    purpose    text        NOT NULL CHECK (purpose IN ('invite', 'reset')),
    role       text,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX account_links_by_email ON account_links (email);
