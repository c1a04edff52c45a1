-- Money in whole nano-dollars (SQLite). Same columns and meaning as
-- migrations/postgres/0008_money.sql.
--
-- Costs are integers: 1 is 10⁻⁹ US dollars (a single token's price is often
-- below a micro-dollar), so sums over any number of rows are exact. Costs
-- stored as REAL dollars are rounded to the nearest nano-dollar.
ALTER TABLE tasks ADD COLUMN cost_nanos INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET cost_nanos = CAST(ROUND(cost_usd * 1e9) AS INTEGER) WHERE cost_usd <> 0;
ALTER TABLE tasks DROP COLUMN cost_usd;

ALTER TABLE task_attempts ADD COLUMN cost_nanos INTEGER NOT NULL DEFAULT 0;
UPDATE task_attempts SET cost_nanos = CAST(ROUND(cost_usd * 1e9) AS INTEGER) WHERE cost_usd <> 0;
ALTER TABLE task_attempts DROP COLUMN cost_usd;
