-- Layout version 4: backlog limits (max_queued), kept at enqueue (postgres/enqueue.py).
--
-- max_queued is the backlog a job's task allowed when it was enqueued, NULL on every job
-- enqueued without one; a capped enqueue counts the task's queued jobs that carry it, under
-- the task's advisory lock, by the partial index below, which holds no other job (a queue's
-- backlog is counted by offload_jobs_claim_queue). A nullable column without a default:
-- adding it rewrites no row.
ALTER TABLE {schema}.offload_jobs ADD COLUMN max_queued integer;

CREATE INDEX offload_jobs_capped ON {schema}.offload_jobs (task)
    WHERE state = 'queued' AND max_queued IS NOT NULL;
