-- Layout version 5: each job keeps the errors of its past attempts.
--
-- A job row held only its last attempt's error, so a job that failed twice and then
-- succeeded (or failed a third way) showed nothing of the first two. `history` is a JSON
-- array of those errors, oldest first, at most records.HISTORY_MAX of them, written only
-- where an attempt ends in an error: successes, claims and enqueues never touch it. NULL on
-- rows from before this step, read as no history; nothing to backfill.
ALTER TABLE offload_jobs ADD COLUMN history TEXT;
