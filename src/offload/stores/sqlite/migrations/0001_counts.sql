-- Layout version 1: jobs per queue and state, kept as running totals.
--
-- Finished rows stay for the retention period (millions of them) and a backlog may hold
-- millions more, and counting them on every metrics scrape or `offload info` cost about
-- 0.5-0.8 µs a row. Every statement that inserts a job, changes its state or deletes it adds
-- its change here, in the same transaction (ops.tally).
--
-- A file from before versioning may keep the totals already: then schema.py skips this
-- step, since the backfill would count its jobs twice.
CREATE TABLE offload_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;

-- The totals of the rows already here; under the write lock, so that no job lands between
-- this count and the first write that keeps the totals.
INSERT INTO offload_counts (queue, state, n)
    SELECT queue, state, count(*) FROM offload_jobs GROUP BY queue, state;
