-- Layout version 5: workflows (postgres/steps.py).
--
-- A workflow step is a job with these columns set (NULL on every job of no workflow, which
-- claims and completes as before): the workflow it belongs to (its last step's id), the
-- inputs it still waits for (waits), what it takes from them (takes), their results as
-- they arrive (inputs, by slot, each as the JSON text its step returned; NULL once they were
-- put in front of its arguments, or for a step that takes none), the steps its own result
-- goes to (feeds, [[job id, slot], ...]) and the workflow's error handler (on_error). They
-- sit on the job's own row, not in a table beside it: the success that fills a step's slot
-- and the release that makes it runnable lock the same row, so two inputs finishing at once
-- in two workers take their turns on it, and only the one that sees waits reach 0 releases.
-- A step that waits is queued with waiting = 'inputs' and run_at beyond any claim's reach
-- (its due time in held_run_at), as a job held for a concurrency slot waits. Nullable
-- columns without a default: adding them rewrites no row.
ALTER TABLE {schema}.offload_jobs
    ADD COLUMN workflow uuid,
    ADD COLUMN waits integer,
    ADD COLUMN takes text CHECK (takes IN ('one', 'all', 'none', 'error')),
    ADD COLUMN inputs jsonb,
    ADD COLUMN feeds jsonb,
    ADD COLUMN on_error uuid;

-- One reason more to wait. NOT VALID: every row meets the narrower check it replaces, so
-- the table is not read again under the migration's lock (new rows are checked all the
-- same).
ALTER TABLE {schema}.offload_jobs DROP CONSTRAINT offload_jobs_waiting_check;
ALTER TABLE {schema}.offload_jobs ADD CONSTRAINT offload_jobs_waiting_check
    CHECK (waiting IN ('rate_limit', 'concurrency', 'inputs')) NOT VALID;

-- A workflow's steps (steps(), cancel and retry of a workflow); partial: jobs of no
-- workflow are not in it.
CREATE INDEX offload_jobs_workflow ON {schema}.offload_jobs (workflow)
    WHERE workflow IS NOT NULL;
