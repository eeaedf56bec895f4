-- The SQLite store's workflow queries (steps.py); the table is in migrations/0007_steps.sql.

-- name: insert_step
INSERT INTO offload_steps (id, workflow, waits, takes, inputs, feeds, on_error)
VALUES (?, ?, ?, ?, ?, ?, ?)

-- A step with inputs to come waits out of every claim's reach, its due time kept.
-- name: hold_step
UPDATE offload_jobs SET waiting='inputs', held_run_at=run_at, run_at=? WHERE id=?

-- name: any_step
SELECT 1 FROM offload_steps LIMIT 1

-- name: steps_of
SELECT id, workflow, waits, takes, inputs, feeds, on_error FROM offload_steps
WHERE id IN ({marks})

-- name: step
SELECT s.id, s.workflow, s.waits, s.takes, s.inputs, s.feeds, s.on_error, j.state
FROM offload_steps AS s JOIN offload_jobs AS j ON j.id = s.id WHERE s.id=?

-- Inputs in ({pairs}: a slot's path and its value, once per input): their slots filled,
-- as many fewer to wait for.
-- name: fill
UPDATE offload_steps SET inputs=json_set(inputs, {pairs}), waits=waits-?
WHERE id=? RETURNING waits, takes, inputs

-- name: args_of
SELECT args FROM offload_jobs WHERE id=? AND state='queued' AND waiting='inputs'

-- name: release_step
UPDATE offload_jobs SET args=?, waiting=NULL, run_at=max(coalesce(held_run_at, ?), ?),
    held_run_at=NULL
WHERE id=? AND state='queued' AND waiting='inputs'
RETURNING queue

-- A step that waits and will never get its inputs.
-- name: cancel_waiting
UPDATE offload_jobs SET state='cancelled', finished_at=?, error=?, waiting=NULL,
    run_at=coalesce(held_run_at, run_at), held_run_at=NULL
WHERE id=? AND state='queued' AND waiting='inputs'
RETURNING queue

-- name: cancel_queued_step
UPDATE offload_jobs SET state='cancelled', finished_at=?, error=?, waiting=NULL,
    run_at=coalesce(held_run_at, run_at), held_run_at=NULL
WHERE id=? AND state='queued'
RETURNING queue

-- name: failure_of
SELECT task, error FROM offload_jobs WHERE id=?

-- name: workflow_jobs
SELECT j.id, j.task, j.queue, j.args, j.kwargs, j.state, j.priority, j.attempt,
    j.max_attempts, j.run_at, j.enqueued_at, j.timeout, j.started_at, j.finished_at,
    j.lease_until, j.worker_id, j.key, j.result, j.error, j.progress, j.meta,
    j.cancel_requested, j.history, j.waiting, j.held_run_at
FROM offload_steps AS s JOIN offload_jobs AS j ON j.id = s.id
WHERE s.workflow=? ORDER BY j.id

-- name: workflow_steps
SELECT s.id, s.waits, j.state, j.queue, j.cancel_requested
FROM offload_steps AS s JOIN offload_jobs AS j ON j.id = s.id WHERE s.workflow=?

-- name: request_cancel
UPDATE offload_jobs SET cancel_requested=1 WHERE id=? AND state='running'

-- A step of a workflow that resumes: back to queued with a fresh attempt budget, now.
-- name: resume_runnable
UPDATE offload_jobs SET state='queued', attempt=0, run_at=?, finished_at=NULL, error=NULL,
    cancel_requested=0, lease_until=NULL, waiting=NULL, held_run_at=NULL
WHERE id=? AND state IN ('failed', 'cancelled')

-- ... or back to waiting for its inputs.
-- name: resume_waiting
UPDATE offload_jobs SET state='queued', attempt=0, run_at=?, held_run_at=?, finished_at=NULL,
    error=NULL, cancel_requested=0, lease_until=NULL, waiting='inputs'
WHERE id=? AND state IN ('failed', 'cancelled')

-- name: workflow_of_key
SELECT id FROM offload_jobs WHERE task=? AND key=?

-- name: state_of
SELECT state FROM offload_steps AS s JOIN offload_jobs AS j ON j.id = s.id WHERE s.id=?

-- A step whose inputs are in its arguments takes nothing more (a retry runs it as it is).
-- name: handed
UPDATE offload_steps SET takes='none' WHERE id=?

-- name: args_any
SELECT args FROM offload_jobs WHERE id=?

-- name: set_args
UPDATE offload_jobs SET args=? WHERE id=?
