-- The work that reads usage buckets across organizations (the roll-up's
-- hour and day reads, the retention delete each pass, the earliest bucket)
-- filters on resolution and time only, which 0011's index cannot serve
-- (it leads with the organization): each pass scanned the whole table.
CREATE INDEX usage_buckets_time_idx ON usage_buckets (resolution, bucket_start);
