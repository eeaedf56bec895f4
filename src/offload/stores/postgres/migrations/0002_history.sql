-- Layout version 2: each job keeps the errors of its past attempts.
--
-- A job row held only its last attempt's error, so a job that failed twice and then
-- succeeded (or failed a third way) showed nothing of the first two. `history` is a jsonb
-- array of those errors, oldest first, at most records.HISTORY_MAX of them: jsonb, unlike
-- the other JSON columns, for its `-` that drops the oldest entry in place. Written only
-- where an attempt ends in an error: successes, claims and enqueues never touch it. NULL on
-- rows from before this step, read as no history; adding a nullable column without a
-- default rewrites no row.
ALTER TABLE {schema}.offload_jobs ADD COLUMN history jsonb;
