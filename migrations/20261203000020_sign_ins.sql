-- When each person last signed in (with a password or through the provider): operational
-- state, one row per person, kept when their sessions end.
CREATE TABLE sign_ins
(
    email        text PRIMARY KEY,
    last_sign_in timestamptz NOT NULL
);
