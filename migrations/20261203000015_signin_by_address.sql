-- Failed sign-ins are also counted per client address, whatever the email.
CREATE INDEX login_failures_by_address ON login_failures (client, failed_at DESC);
