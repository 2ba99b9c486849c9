-- Signed-in browser sessions. The cookie holds a random secret; only its hash is stored.
CREATE TABLE sessions
(
    id_hash      text PRIMARY KEY,
    email        text        NOT NULL REFERENCES users (email),
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_by_email ON sessions (email);

-- Failed sign-ins, for rate limiting.
CREATE TABLE login_failures
(
    email     text        NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_recent ON login_failures (email, failed_at DESC);
