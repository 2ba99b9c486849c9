-- The Slack member each person is, projected from SlackLinked / SlackUnlinked. A member is
-- at most one person: a click in Slack must map to exactly one ExecOps user.
ALTER TABLE users ADD COLUMN slack_user_id text;

CREATE UNIQUE INDEX users_slack_user_id ON users (slack_user_id) WHERE slack_user_id IS NOT NULL;
