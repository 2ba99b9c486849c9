-- When each API token was last used, to the minute: operational state kept beside the
-- `api_tokens` read model (which the log rebuilds), written at most once a minute per token.
CREATE TABLE token_uses
(
    token_id     text PRIMARY KEY,
    last_used_at timestamptz NOT NULL
);
