-- Layout version 6: rate and concurrency limits, enforced in claim (stores/sqlite/flow.py).
--
-- Each limited job carries its limits (NULL on every other job, which claims as before):
-- rate_key, rate (tokens a second) and burst name its token bucket in offload_buckets;
-- conc_key and conc_limit its group of at most conc_limit running jobs, counted from the
-- running rows themselves, so a dead worker's slots come back when its leases lapse.
-- waiting says why a due job was held back. A job held for a slot keeps its due time in
-- held_run_at while run_at sits beyond any claim's reach, so claims skip it by the same
-- index range as any job not yet due, until a slot of its group frees up. max_queued is the
-- backlog its task allows; enqueue counts the task's queued capped jobs by its own index.
ALTER TABLE offload_jobs ADD COLUMN rate_key TEXT;
ALTER TABLE offload_jobs ADD COLUMN rate REAL;
ALTER TABLE offload_jobs ADD COLUMN burst INTEGER;
ALTER TABLE offload_jobs ADD COLUMN conc_key TEXT;
ALTER TABLE offload_jobs ADD COLUMN conc_limit INTEGER;
ALTER TABLE offload_jobs ADD COLUMN waiting TEXT;
ALTER TABLE offload_jobs ADD COLUMN held_run_at REAL;
ALTER TABLE offload_jobs ADD COLUMN max_queued INTEGER;
CREATE INDEX offload_jobs_conc_running ON offload_jobs (conc_key)
    WHERE state = 'running' AND conc_key IS NOT NULL;
CREATE INDEX offload_jobs_conc_held ON offload_jobs (conc_key) WHERE waiting = 'concurrency';
CREATE INDEX offload_jobs_capped ON offload_jobs (task)
    WHERE state = 'queued' AND max_queued IS NOT NULL;
CREATE TABLE offload_buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
