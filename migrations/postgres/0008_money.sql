-- Money in whole nano-dollars (PostgreSQL). Same columns and meaning as
-- migrations/sqlite/0006_money.sql.
--
-- Costs are integers: 1 is 10⁻⁹ US dollars (a single token's price is often
-- below a micro-dollar), so sums over any number of rows are exact. Costs
-- stored as double precision dollars are rounded to the nearest
-- nano-dollar through numeric, which drops the binary noise and rounds
-- halves away from zero as SQLite's ROUND does; beyond the bigint range
-- they are held at its bounds, and NaN becomes 0. Each table is rewritten
-- once, in place, rather than updated row by row.
ALTER TABLE tasks ALTER COLUMN cost_usd DROP DEFAULT;
ALTER TABLE tasks ALTER COLUMN cost_usd TYPE BIGINT
    USING CASE WHEN cost_usd = 'NaN' THEN 0
               ELSE LEAST(GREATEST(ROUND(cost_usd::numeric * 1000000000),
                                   -9223372036854775808), 9223372036854775807)::bigint
          END;
ALTER TABLE tasks ALTER COLUMN cost_usd SET DEFAULT 0;
ALTER TABLE tasks RENAME COLUMN cost_usd TO cost_nanos;

ALTER TABLE task_attempts ALTER COLUMN cost_usd TYPE BIGINT
    USING CASE WHEN cost_usd = 'NaN' THEN 0
               ELSE LEAST(GREATEST(ROUND(cost_usd::numeric * 1000000000),
                                   -9223372036854775808), 9223372036854775807)::bigint
          END;
ALTER TABLE task_attempts ALTER COLUMN cost_usd SET DEFAULT 0;
ALTER TABLE task_attempts RENAME COLUMN cost_usd TO cost_nanos;
