-- Layout version 3: the finished-jobs index carries each job's state.
--
-- The dashboard's activity chart counts the jobs that finished in the last hour per state
-- and per minute (Store.activity). With finished_at alone in the index, each of those jobs
-- cost a lookup of its row for the state (about a microsecond each, a hundred thousand in a
-- busy hour); with the state beside it the count reads the index alone. The purge's range
-- on finished_at is served as before. A job's state and finished_at change together, so the
-- wider key costs no extra write.
DROP INDEX IF EXISTS offload_jobs_finished;
CREATE INDEX offload_jobs_finished
    ON offload_jobs (finished_at, state) WHERE finished_at IS NOT NULL;
