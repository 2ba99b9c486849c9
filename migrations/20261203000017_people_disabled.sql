-- A disabled person keeps their row (who decided what stays readable) but is refused on
-- every path: sign-in, sessions, tokens, Slack clicks and email links.
ALTER TABLE users ADD COLUMN disabled_at timestamptz;
