-- Stream failover default (PostgreSQL). Twin: migrations/sqlite/0013_stream_failover.sql.
-- An organization's default for what a stream does when its provider fails
-- after sending text (issue 33): 'fail' or 'continue'; NULL leaves the
-- built-in default ('fail'). A request's X-Vel-Stream-Failover header wins.
-- (organizations already has row-level security on PostgreSQL.)
ALTER TABLE organizations ADD COLUMN stream_failover TEXT
    CHECK (stream_failover IN ('fail', 'continue'));
