-- Layout version 3: rate and concurrency limits, enforced in claim (postgres/flow.py).
--
-- Each limited job carries its limits (NULL on every other job, which claims as before):
-- rate_key, rate (tokens a second) and burst name its token bucket in offload_buckets;
-- conc_key and conc_limit its group of at most conc_limit running jobs, counted from the
-- running rows themselves, so a dead worker's slots come back when its leases lapse.
-- waiting says why a due job was held back. A job held for a slot keeps its due time in
-- held_run_at while run_at sits beyond any claim's reach (flow.FAR), so claims skip it by
-- the same index range as any job not yet due, until a slot of its group frees up. Nullable
-- columns without a default: adding them rewrites no row.
ALTER TABLE {schema}.offload_jobs
    ADD COLUMN rate_key text,
    ADD COLUMN rate double precision,
    ADD COLUMN burst integer,
    ADD COLUMN conc_key text,
    ADD COLUMN conc_limit integer,
    ADD COLUMN waiting text CHECK (waiting IN ('rate_limit', 'concurrency')),
    ADD COLUMN held_run_at timestamptz;

-- The running jobs of a group, counted under its lock at each limited claim; the jobs held
-- for a slot of a group, released when one of its jobs stops running; the jobs waiting for
-- a token, counted for limit_usage. Partial: jobs without limits are in none of them.
CREATE INDEX offload_jobs_conc_running ON {schema}.offload_jobs (conc_key)
    WHERE state = 'running' AND conc_key IS NOT NULL;
CREATE INDEX offload_jobs_conc_held ON {schema}.offload_jobs (conc_key)
    WHERE waiting = 'concurrency';
CREATE INDEX offload_jobs_rate_held ON {schema}.offload_jobs (rate_key)
    WHERE waiting = 'rate_limit';

-- One token bucket per rate key: the tokens it held at `at`, refilled by the claim that
-- reads it (tokens + rate * elapsed, at most burst), under the key's lock.
CREATE TABLE {schema}.offload_buckets (
    key    text PRIMARY KEY,
    tokens double precision NOT NULL,
    at     timestamptz NOT NULL
);
