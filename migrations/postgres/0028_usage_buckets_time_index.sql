-- The work that reads usage buckets across organizations (the roll-up's
-- hour and day reads, the retention delete each pass, the earliest bucket)
-- filters on resolution and time only, which 0014's index cannot serve
-- (it leads with the organization): each pass scanned the whole table.
-- Measured with bench/usage_partitions.sh (docs/benchmarks.md, "Usage
-- buckets on PostgreSQL"), this index rather than partitioning the minute
-- rows by day.
CREATE INDEX usage_buckets_time_idx ON usage_buckets (resolution, bucket_start);
