-- Tokens per minute per organization, user and API key (`limits/`): the
-- tokens (prompt and completion, as the providers report them) that a
-- subject's requests may use in a minute. Counted in rate_limit_windows
-- like the other limits.
ALTER TABLE rate_limit_rules ADD COLUMN tokens_per_minute BIGINT;

-- The API key a task was submitted with, so that its tokens count against
-- the key's limits (and its provider calls against the key's budgets).
ALTER TABLE tasks ADD COLUMN api_key_id TEXT;
