-- The PostgreSQL store's workflow queries (steps.py), in the format of queries.sql; the
-- columns are in migrations/0005_steps.sql. Run only for jobs with a `step`: a job of no
-- workflow never reaches them.

-- `enqueue` for a batch that holds workflow steps, with every job's limits (NULL for the
-- unlimited) and step columns (NULL for a job of no workflow in the batch). A step with
-- inputs to come waits out of every claim's reach (run_at at %(far)s), its due time kept in
-- held_run_at; it wakes no worker.
-- name: enqueue_steps
WITH ins AS (
    INSERT INTO {schema}.offload_jobs (id, task, queue, state, priority, attempt,
        max_attempts, run_at, enqueued_at, timeout, key, args, kwargs, meta, rate_key, rate,
        burst, conc_key, conc_limit, max_queued, workflow, waits, takes, inputs, feeds,
        on_error, waiting, held_run_at)
    SELECT n.id, n.task, n.queue, 'queued', n.priority, 0, n.max_attempts,
        CASE WHEN n.waits > 0 THEN to_timestamp(%(far)s::float8) ELSE n.due END, now(),
        n.timeout, n.key, n.args, n.kwargs, coalesce(n.meta, '{}'), n.rate_key, n.rate,
        n.burst, n.conc_key, n.conc_limit, n.max_queued, n.workflow, n.waits, n.takes,
        CASE WHEN n.waits > 0 AND n.takes <> 'none' THEN '{}'::jsonb END, n.feeds,
        n.on_error, CASE WHEN n.waits > 0 THEN 'inputs' END,
        CASE WHEN n.waits > 0 THEN n.due END
    FROM (SELECT u.*,
            coalesce(to_timestamp(u.run_at), now() + make_interval(secs => u.delay)) AS due
        FROM unnest(%(ids)s::uuid[], %(tasks)s::text[], %(queues)s::text[],
            %(priorities)s::integer[], %(max_attempts)s::integer[], %(run_ats)s::float8[],
            %(delays)s::float8[], %(timeouts)s::float8[], %(keys)s::text[], %(args)s::json[],
            %(kwargs)s::json[], %(metas)s::json[], %(rate_keys)s::text[], %(rates)s::float8[],
            %(bursts)s::integer[], %(conc_keys)s::text[], %(conc_limits)s::integer[],
            %(max_queueds)s::integer[], %(workflows)s::uuid[], %(waits)s::integer[],
            %(takes)s::text[], %(feeds)s::jsonb[], %(on_errors)s::uuid[])
        AS u(id, task, queue, priority, max_attempts, run_at, delay, timeout, key, args,
            kwargs, meta, rate_key, rate, burst, conc_key, conc_limit, max_queued, workflow,
            waits, takes, feeds, on_error)) AS n
    ON CONFLICT (task, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id, queue, waiting
)
SELECT ins.id::text, extract(epoch FROM now())::float8,
    CASE WHEN ins.waiting IS NULL THEN pg_notify(%(channel)s, ins.queue) END
FROM ins

-- The steps of a workflow whose last step's key was on record when the batch was written:
-- they go again, in the transaction that wrote them, so nobody ever saw them.
-- name: step_drop
DELETE FROM {schema}.offload_jobs WHERE id = ANY(%(ids)s::uuid[])

-- `complete`'s tail for a batch that may hold steps: what the workflow rules need of each
-- job applied, as the statement left it.
-- name: step_outcome
, j.workflow::text, j.state, j.feeds, j.on_error::text, j.task, j.error::text, j.result

-- Whether a job is a step, and of which workflow.
-- name: step_of
SELECT workflow::text, state, feeds FROM {schema}.offload_jobs WHERE id = %(id)s

-- The steps a batch of successes feeds, locked in id order before step_fill when there are
-- several: two batches feeding the same steps then never wait on each other in a circle.
-- name: step_lock
SELECT 1 FROM {schema}.offload_jobs WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE

-- The results of steps that succeeded, each put in its slot of the step it feeds (the
-- JSON text as the worker sent it, kept as a string so that nothing reorders it), and one
-- input fewer to wait for. The update locks the row: the inputs of one step finishing at
-- once in two workers take their turns, the second one seeing the first one's count.
-- name: step_fill
WITH e AS (
    SELECT child, jsonb_object_agg(slot::text, to_jsonb(coalesce(res, 'null'))) AS patch,
        count(*)::integer AS n
    FROM unnest(%(children)s::uuid[], %(slots)s::integer[], %(results)s::text[])
        AS e(child, slot, res)
    GROUP BY child
)
UPDATE {schema}.offload_jobs AS c SET
    inputs = CASE WHEN c.inputs IS NULL THEN NULL ELSE c.inputs || e.patch END,
    waits = c.waits - e.n
FROM e WHERE c.id = e.child
RETURNING c.id::text, c.waits

-- Waiting steps made runnable: their inputs in front of their arguments (one: its input;
-- all: the list of them in slot order; none: nothing; error: `first`, the failed step's
-- id), due at their own time or now, whichever is later. Only a step still queued and
-- waiting: one cancelled meanwhile stays so. Returns the queues to wake.
-- name: step_release
UPDATE {schema}.offload_jobs AS c SET
    args = CASE WHEN c.takes = 'none' AND r.first IS NULL THEN c.args
        ELSE ('[' || CASE
                WHEN r.first IS NOT NULL THEN r.first
                WHEN c.takes = 'one' THEN coalesce(c.inputs ->> '0', 'null')
                ELSE '[' || coalesce((SELECT string_agg(i.v, ',' ORDER BY i.k::integer)
                    FROM jsonb_each_text(c.inputs) AS i(k, v)), '') || ']' END
            || CASE WHEN json_array_length(c.args) = 0 THEN ']'
                ELSE ',' || substr(btrim(c.args::text), 2) END)::json
        END,
    inputs = NULL, waiting = NULL,
    run_at = greatest(coalesce(c.held_run_at, now()), now()), held_run_at = NULL
FROM unnest(%(ids)s::uuid[], %(firsts)s::text[]) AS r(id, first)
WHERE c.id = r.id AND c.state = 'queued' AND c.waiting = 'inputs'
RETURNING c.queue

-- The waiting steps after `feeds` (a step's [[job id, slot], ...]), and theirs, cancelled
-- with `error`: they will never get their inputs. The walk goes on through the steps that
-- wait only: the ones after a step that ran are its own business.
-- name: step_cascade
WITH RECURSIVE later(id) AS (
    SELECT (f ->> 0)::uuid FROM jsonb_array_elements(%(feeds)s::jsonb) AS f
    UNION
    SELECT (f ->> 0)::uuid FROM later JOIN {schema}.offload_jobs AS j ON j.id = later.id
        CROSS JOIN jsonb_array_elements(j.feeds) AS f
    WHERE j.state = 'queued' AND j.waiting = 'inputs'
)
UPDATE {schema}.offload_jobs AS j SET state = 'cancelled', finished_at = now(),
    error = %(error)s::json, waiting = NULL, run_at = coalesce(j.held_run_at, j.run_at),
    held_run_at = NULL
FROM later WHERE j.id = later.id AND j.state = 'queued' AND j.waiting = 'inputs'

-- Cancel of a workflow's id: every step not finished; queued ones are cancelled (with
-- `error`, the last step itself without), running ones asked to stop.
-- name: step_cancel_workflow
UPDATE {schema}.offload_jobs SET
    state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
    error = CASE WHEN state <> 'queued' THEN error
        WHEN id = %(workflow)s THEN NULL ELSE %(error)s::json END,
    run_at = CASE WHEN state = 'queued' THEN coalesce(held_run_at, run_at) ELSE run_at END,
    held_run_at = CASE WHEN state = 'queued' THEN NULL ELSE held_run_at END,
    waiting = CASE WHEN state = 'queued' THEN NULL ELSE waiting END,
    finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
    cancel_requested = cancel_requested OR state = 'running'
WHERE workflow = %(workflow)s AND state IN ('queued', 'running')

-- Cancel of one step: as `cancel`, returning its state after (cancelled: it was queued).
-- name: step_cancel
UPDATE {schema}.offload_jobs SET
    state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
    run_at = CASE WHEN state = 'queued' THEN coalesce(held_run_at, run_at) ELSE run_at END,
    held_run_at = CASE WHEN state = 'queued' THEN NULL ELSE held_run_at END,
    waiting = CASE WHEN state = 'queued' THEN NULL ELSE waiting END,
    finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
    cancel_requested = cancel_requested OR state = 'running'
WHERE id = %(id)s AND state IN ('queued', 'running')
RETURNING state, task

-- Retry of a step: every failed or cancelled step of its workflow back to queued with a
-- fresh attempt budget, runnable when its inputs are in and were given to it, waiting for
-- them when not (a step whose last input came in after it was cancelled waits here, and
-- step_release then gives them to it). Returns the ones to release, and the queues.
-- name: step_resume
UPDATE {schema}.offload_jobs SET state = 'queued', attempt = 0, finished_at = NULL,
    error = NULL, cancel_requested = false, lease_until = NULL,
    waiting = CASE WHEN waits > 0 OR inputs IS NOT NULL THEN 'inputs' END,
    held_run_at = CASE WHEN waits > 0 OR inputs IS NOT NULL THEN now() END,
    run_at = CASE WHEN waits > 0 OR inputs IS NOT NULL THEN to_timestamp(%(far)s::float8)
        ELSE now() END
WHERE workflow = %(workflow)s AND state IN ('failed', 'cancelled')
RETURNING id::text, waits <= 0 AND inputs IS NOT NULL, queue, waiting IS NULL

-- Every job of a workflow, in the order stored (ids are time-ordered).
-- name: workflow_jobs
SELECT {columns}, history::text, waiting, extract(epoch FROM held_run_at)::float8
FROM {schema}.offload_jobs WHERE workflow = %(workflow)s ORDER BY offload_jobs.id
