-- Failed sign-ins are counted per client address and email, so a flood against one email
-- from one address does not lock its owner out everywhere.
ALTER TABLE login_failures ADD COLUMN client text NOT NULL DEFAULT '';
CREATE INDEX login_failures_by_client ON login_failures (email, client, failed_at DESC);
CREATE INDEX login_failures_by_age ON login_failures (failed_at);
