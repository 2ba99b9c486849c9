-- People and their API tokens, projected from the User streams.
CREATE TABLE users
(
    email         text PRIMARY KEY,
    role          text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE api_tokens
(
    token_id   text PRIMARY KEY,
    email      text        NOT NULL REFERENCES users (email),
    token_hash text        NOT NULL UNIQUE,
    issued_at  timestamptz NOT NULL,
    revoked_at timestamptz
);
