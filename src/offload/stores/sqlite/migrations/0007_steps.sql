-- Layout version 7: workflows (stores/sqlite/steps.py).
--
-- A workflow step has a row here beside its job: how many inputs it still waits for, what
-- it takes from them, their results as they come in (a JSON array, one slot per input),
-- the steps its own result goes to, and the workflow's error handler. A step that waits
-- is a queued job with waiting = 'inputs' and run_at beyond any claim's reach (its due
-- time in held_run_at), the way a job held for a concurrency slot waits. Jobs of no
-- workflow have no row, and a claim never reads this table.
CREATE TABLE IF NOT EXISTS offload_steps (
    id TEXT PRIMARY KEY REFERENCES offload_jobs (id) ON DELETE CASCADE,
    workflow TEXT NOT NULL,
    waits INTEGER NOT NULL,
    takes TEXT NOT NULL,
    inputs TEXT NOT NULL,
    feeds TEXT NOT NULL,
    on_error TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS offload_steps_workflow ON offload_steps (workflow);
