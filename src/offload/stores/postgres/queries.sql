-- The PostgreSQL store's queries, by name (offload.stores.sqlfiles describes the format).
-- {schema} is the store's schema, quoted; {columns} is job_columns; both are filled in when
-- the store is built. Other {slots} are filled by the caller, as each query says.
-- Parameters are psycopg's %(name)s. Times cross the boundary as float8 seconds since the
-- epoch (to_timestamp in, extract(epoch ...) out), the form the job records hold; the
-- server's clock (now()) decides every lease and every due time.


-- === Layout ================================================================================

-- Held for the length of a migration's transaction: two processes that start together
-- migrate once. The key is derived from the schema name (schema.lock_key).
-- name: migration_lock
SELECT pg_advisory_xact_lock(%(key)s)

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- The layout version: one row, written by the last step that ran.
-- name: create_layout
CREATE TABLE IF NOT EXISTS {schema}.offload_layout (
    version integer NOT NULL, migrated_at timestamptz NOT NULL DEFAULT now())

-- name: layout_version
SELECT max(version) FROM {schema}.offload_layout

-- name: set_layout_version
INSERT INTO {schema}.offload_layout (version) VALUES (%(version)s)

-- Whether the layout table exists, without creating anything (a read-only check on open).
-- name: layout_exists
SELECT to_regclass(%(table)s) IS NOT NULL


-- === Reading jobs ==========================================================================

-- A whole job, in the order records.record reads it.
-- name: job_columns
id::text, task, queue, state, priority, attempt, max_attempts,
extract(epoch FROM run_at)::float8, extract(epoch FROM enqueued_at)::float8, timeout,
extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8,
extract(epoch FROM lease_until)::float8, worker_id, key, args::text, kwargs::text,
result::text, error::text, progress::text, meta::text, cancel_requested

-- With the error history, the reason a due job waits and a held job's due time after the
-- job's columns (rows.record); a claim's and an enqueue's rows go without them.
-- name: job_by_id
SELECT {columns}, history::text, waiting, extract(epoch FROM held_run_at)::float8 FROM {schema}.offload_jobs WHERE id = %(id)s

-- name: jobs_by_key
SELECT {columns}, history::text, waiting, extract(epoch FROM held_run_at)::float8 FROM {schema}.offload_jobs
WHERE (task, key) IN (SELECT * FROM unnest(%(tasks)s::text[], %(keys)s::text[]))

-- Newest first, a page at a time; a NULL filter matches everything. before: the cursor or
-- the upper time bound as an id, whichever is lower; from: the lower time bound as an id
-- (JobFilter says why time bounds are id bounds: a range of the primary key). The order is
-- the table's uuid column, named with its table: the bare name would be job_columns' text
-- of it, the same order but no index's, so every matching row would be sorted.
-- name: list_jobs
SELECT {columns}, history::text, waiting, extract(epoch FROM held_run_at)::float8 FROM {schema}.offload_jobs
WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s))
    AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s))
    AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s))
    AND (%(before)s::uuid IS NULL OR id < %(before)s)
    AND (%(from)s::uuid IS NULL OR id >= %(from)s)
ORDER BY offload_jobs.id DESC LIMIT %(limit)s

-- list_jobs for one idempotency key: at most one job per task, each one seek of
-- offload_jobs_key. With no tasks given, the tasks that hold keys come from a skip-scan of
-- that index (one seek per task name, not a read of every keyed job).
-- name: list_key
SELECT {columns}, history::text, waiting, extract(epoch FROM held_run_at)::float8 FROM {schema}.offload_jobs
WHERE key = %(key)s
    AND task = ANY(coalesce(%(tasks)s::text[], ARRAY(
        WITH RECURSIVE keyed(task) AS (
            SELECT min(task) FROM {schema}.offload_jobs WHERE key IS NOT NULL
            UNION ALL
            SELECT (SELECT min(j.task) FROM {schema}.offload_jobs j
                    WHERE j.key IS NOT NULL AND j.task > keyed.task)
            FROM keyed WHERE keyed.task IS NOT NULL
        )
        SELECT task FROM keyed WHERE task IS NOT NULL)))
    AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s))
    AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s))
    AND (%(before)s::uuid IS NULL OR id < %(before)s)
    AND (%(from)s::uuid IS NULL OR id >= %(from)s)
ORDER BY offload_jobs.id DESC LIMIT %(limit)s

-- Finished jobs per bucket number (floor(finished_at / bucket)) and state, from the range
-- of offload_jobs_finished at or after since.
-- name: activity
SELECT floor(extract(epoch FROM finished_at)::float8 / %(bucket)s::float8), state, count(*)
FROM {schema}.offload_jobs
WHERE state IN ('succeeded', 'failed', 'cancelled')
    AND finished_at >= to_timestamp(%(since)s::float8)
GROUP BY 1, 2

-- name: counts
SELECT queue, state, count(*) FROM {schema}.offload_jobs GROUP BY queue, state

-- When the earliest queued job becomes due; NULL queues: every queue.
-- name: next_run_at
SELECT extract(epoch FROM min(run_at))::float8 FROM {schema}.offload_jobs
WHERE state = 'queued' AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s))

-- name: now
SELECT extract(epoch FROM clock_timestamp())::float8

-- The change feed's token: one past the newest finished writing transaction of the server.
-- It moves with every write, the jobs' and any other, and costs no table access.
-- name: change_token
SELECT pg_snapshot_xmax(pg_current_snapshot())::text


-- === Enqueue ===============================================================================

-- A batch in one statement, so that it commits (and notifies) at once, also inside a
-- transaction of the caller's. A key already held keeps its job: the row is skipped, and
-- the caller reads the holder (jobs_by_key). Each inserted row notifies its queue's
-- channel; PostgreSQL folds the same notification within a transaction into one, sent on
-- commit. Returns the inserted ids with the enqueue time.
-- name: enqueue
WITH ins AS (
    INSERT INTO {schema}.offload_jobs (id, task, queue, state, priority, attempt,
        max_attempts, run_at, enqueued_at, timeout, key, args, kwargs, meta{flow_columns})
    SELECT n.id, n.task, n.queue, 'queued', n.priority, 0, n.max_attempts,
        coalesce(to_timestamp(n.run_at), now() + make_interval(secs => n.delay)), now(),
        n.timeout, n.key, n.args, n.kwargs, coalesce(n.meta, '{}'){flow_values}
    FROM unnest(%(ids)s::uuid[], %(tasks)s::text[], %(queues)s::text[],
        %(priorities)s::integer[], %(max_attempts)s::integer[], %(run_ats)s::float8[],
        %(delays)s::float8[], %(timeouts)s::float8[], %(keys)s::text[], %(args)s::json[],
        %(kwargs)s::json[], %(metas)s::json[]{flow_arrays})
        AS n(id, task, queue, priority, max_attempts, run_at, delay, timeout, key, args,
            kwargs, meta{flow_names})
    ON CONFLICT (task, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id, queue
)
SELECT ins.id::text, extract(epoch FROM now())::float8, pg_notify(%(channel)s, ins.queue)
FROM ins

-- What `enqueue` gains for a batch with a limited job (rows.queries_for composes it as
-- enqueue_limited): each job's limits, NULL for the jobs without (max_queued: its task's
-- backlog limit, which marks the job as one the limit counts). A batch of jobs without
-- limits runs `enqueue` as it is.
-- name: enqueue_flow_columns
, rate_key, rate, burst, conc_key, conc_limit, max_queued

-- name: enqueue_flow_values
, n.rate_key, n.rate, n.burst, n.conc_key, n.conc_limit, n.max_queued

-- name: enqueue_flow_arrays
, %(rate_keys)s::text[], %(rates)s::float8[], %(bursts)s::integer[], %(conc_keys)s::text[],
        %(conc_limits)s::integer[], %(max_queueds)s::integer[]

-- One job, the common case of an endpoint's call: the same statement with plain parameters,
-- which cost a fraction of a twelve-array batch to send.
-- name: enqueue_one
WITH ins AS (
    INSERT INTO {schema}.offload_jobs (id, task, queue, state, priority, attempt,
        max_attempts, run_at, enqueued_at, timeout, key, args, kwargs, meta)
    VALUES (%(id)s, %(task)s, %(queue)s, 'queued', %(priority)s, 0, %(max_attempts)s,
        coalesce(to_timestamp(%(run_at)s::float8),
            now() + make_interval(secs => %(delay)s::float8)),
        now(), %(timeout)s::float8, %(key)s, %(args)s, %(kwargs)s,
        coalesce(%(meta)s::json, '{}'))
    ON CONFLICT (task, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING id, queue
)
SELECT ins.id::text, extract(epoch FROM now())::float8, pg_notify(%(channel)s, ins.queue)
FROM ins


-- === Claim =================================================================================

-- {where}: claim_all, claim_one or claim_some. Locked rows are skipped, so claimers never
-- wait on each other; the picked rows are returned in no order (the store sorts them).
-- After the job's columns come its limits, all NULL for a job without (flow.claim), and
-- what it waited for (flow.admit: a job held for a token has it).
-- name: claim
WITH picked AS (
    SELECT id AS picked_id FROM {schema}.offload_jobs
    WHERE state = 'queued' AND run_at <= now() {where}
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.offload_jobs AS j SET state = 'running', attempt = j.attempt + 1,
    lease_until = now() + make_interval(secs => %(ttl)s), worker_id = %(worker)s,
    started_at = now(), cancel_requested = false
FROM picked WHERE j.id = picked.picked_id
RETURNING {columns}, j.rate_key, j.rate, j.burst, j.conc_key, j.conc_limit, j.waiting

-- name: claim_one
AND queue = %(queue)s

-- name: claim_some
AND queue = ANY(%(queues)s)


-- === Running jobs: lease, progress, outcomes ===============================================
-- Each change to a running job holds only while the caller still holds its lease: the same
-- worker, the same attempt.

-- name: heartbeat
UPDATE {schema}.offload_jobs AS j SET lease_until = now() + make_interval(secs => %(ttl)s)
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS l(id, attempt)
WHERE j.id = l.id AND j.state = 'running' AND j.worker_id = %(worker)s
    AND j.attempt = l.attempt
RETURNING j.id::text, j.cancel_requested

-- name: set_progress
UPDATE {schema}.offload_jobs SET progress = %(progress)s
WHERE id = %(id)s AND state = 'running' AND worker_id = %(worker)s AND attempt = %(attempt)s

-- Every kind of outcome in one statement (the kinds of offload.stores.OutcomeKind):
-- succeeded, failed and cancelled end the job; retry queues it again after its delay;
-- requeue (a worker shutting down) queues it now with room for one more attempt; release
-- (claimed ahead, never started) undoes the claim, or ends the job cancelled when its
-- cancellation was asked for meanwhile. SET reads the row as it was before the statement.
-- Returns the ids applied (the others were fenced out), each with its concurrency key, not
-- NULL for a job of a group, whose held jobs flow.release then looks at. {guard}: in the
-- statement nearly every batch runs, a workflow step is left out as if fenced (the store
-- then applies it with its workflow's rules, steps.py); {tail}: what those rules read.
-- name: complete
UPDATE {schema}.offload_jobs AS j SET
    state = CASE
        WHEN o.kind IN ('succeeded', 'failed', 'cancelled') THEN o.kind
        WHEN o.kind = 'release' AND j.cancel_requested THEN 'cancelled'
        ELSE 'queued' END,
    result = CASE WHEN o.kind = 'succeeded' THEN o.result ELSE j.result END,
    error = CASE
        WHEN o.kind = 'succeeded' THEN NULL
        WHEN o.kind IN ('failed', 'cancelled', 'retry') THEN o.error
        ELSE j.error END,
    finished_at = CASE
        WHEN o.kind IN ('succeeded', 'failed', 'cancelled')
            OR (o.kind = 'release' AND j.cancel_requested) THEN now()
        ELSE j.finished_at END,
    run_at = CASE
        WHEN o.kind = 'retry' THEN now() + make_interval(secs => o.delay)
        WHEN o.kind IN ('requeue', 'release') THEN now()
        ELSE j.run_at END,
    attempt = CASE
        WHEN o.kind = 'release' AND NOT j.cancel_requested THEN j.attempt - 1
        ELSE j.attempt END,
    started_at = CASE
        WHEN o.kind = 'release' AND NOT j.cancel_requested AND j.attempt = 1 THEN NULL
        ELSE j.started_at END,
    worker_id = CASE
        WHEN o.kind = 'release' AND NOT j.cancel_requested AND j.attempt = 1 THEN NULL
        ELSE j.worker_id END,
    max_attempts = CASE
        WHEN o.kind = 'requeue' THEN greatest(j.max_attempts, j.attempt + 1)
        ELSE j.max_attempts END,
    lease_until = NULL,
    cancel_requested = false{history}
FROM unnest(%(ids)s::uuid[], %(workers)s::text[], %(attempts)s::integer[], %(kinds)s::text[],
    %(results)s::text[], %(errors)s::json[], %(delays)s::float8[]{entries})
    AS o(id, worker_id, attempt, kind, result, error, delay{entry})
WHERE j.id = o.id AND j.state = 'running' AND j.worker_id = o.worker_id
    AND j.attempt = o.attempt {guard}
RETURNING j.id::text, j.conc_key{tail}

-- What `complete` gains for a batch with an error to keep (a retry or a failure): a history
-- entry per outcome, NULL for the others. A batch of successes runs `complete` as it is.
-- name: complete_history
,
    history = CASE WHEN o.entry IS NULL THEN j.history ELSE {append} END

-- name: complete_entries
, %(entries)s::jsonb[]

-- name: complete_entry
, entry

-- The history with the entry `o.entry` or `r.entry` appended, its oldest entry dropped once
-- records.HISTORY_MAX (the 9 is one below it) are there; NULL is a row from before it.
-- name: append_history
CASE WHEN jsonb_array_length(coalesce(j.history, '[]')) > 9 THEN j.history - 0
    ELSE coalesce(j.history, '[]') END || jsonb_build_array({entry})


-- === Expired leases ========================================================================

-- Running jobs whose lease lapsed, locked so that two reapers take each once.
-- name: expired
SELECT id::text, attempt, max_attempts, worker_id FROM {schema}.offload_jobs
WHERE state = 'running' AND lease_until < now()
ORDER BY lease_until LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- Each one queued again (failed when out of attempts), with the error the store words;
-- a step that failed so is then handed to its workflow's rules (step_outcome).
-- name: reap
UPDATE {schema}.offload_jobs AS j SET
    state = CASE WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() ELSE j.finished_at END,
    run_at = CASE WHEN j.attempt >= j.max_attempts THEN j.run_at ELSE now() END,
    lease_until = NULL, error = r.error, history = {append}
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(errors)s::json[],
    %(entries)s::jsonb[])
    AS r(id, attempt, error, entry)
WHERE j.id = r.id AND j.state = 'running' AND j.attempt = r.attempt
RETURNING j.queue, j.conc_key, j.id::text{tail}


-- === Operator actions ======================================================================

-- queued -> cancelled now; running -> cancel requested, and its worker told on commit (a
-- notification of the kind listener.CANCEL_MARK names; the heartbeat reads the flag too).
-- Finished jobs are left as they are. A job held by a limit waits no more, and keeps the
-- due time it had. A workflow step is left to steps.cancel.
-- name: cancel
WITH c AS (
    UPDATE {schema}.offload_jobs SET
        state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
        run_at = CASE WHEN state = 'queued' THEN coalesce(held_run_at, run_at) ELSE run_at END,
        held_run_at = CASE WHEN state = 'queued' THEN NULL ELSE held_run_at END,
        waiting = CASE WHEN state = 'queued' THEN NULL ELSE waiting END,
        finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
        cancel_requested = cancel_requested OR state = 'running'
    WHERE id = %(id)s AND state IN ('queued', 'running') AND workflow IS NULL
    RETURNING queue, state, worker_id
)
SELECT queue, CASE WHEN state = 'running' AND worker_id IS NOT NULL
    THEN pg_notify(%(channel)s, %(mark)s || worker_id) END
FROM c

-- The workers of a workflow's running steps that steps.cancel asked to stop, told as the
-- cancel statement tells one job's.
-- name: cancel_notify_steps
SELECT pg_notify(%(channel)s, %(mark)s || w.worker_id)
FROM (
    SELECT DISTINCT worker_id FROM {schema}.offload_jobs
    WHERE workflow = (SELECT workflow FROM {schema}.offload_jobs WHERE id = %(id)s)
        AND state = 'running' AND cancel_requested AND worker_id IS NOT NULL
) AS w

-- A worker's running jobs whose cancellation was asked for (CancelSignals), read from the
-- running rows' partial index, which holds no more rows than jobs in flight.
-- name: cancel_flagged
SELECT id::text FROM {schema}.offload_jobs
WHERE state = 'running' AND worker_id = %(worker)s AND cancel_requested

-- A workflow step is left to steps.resume.
-- name: retry
UPDATE {schema}.offload_jobs SET state = 'queued', attempt = 0, run_at = now(),
    finished_at = NULL, error = NULL, cancel_requested = false, lease_until = NULL,
    waiting = NULL, held_run_at = NULL
WHERE id = %(id)s AND state IN ('failed', 'cancelled') AND workflow IS NULL
RETURNING {columns}, history::text, waiting, extract(epoch FROM held_run_at)::float8

-- name: delete
DELETE FROM {schema}.offload_jobs
WHERE id = %(id)s AND state IN ('succeeded', 'failed', 'cancelled')
RETURNING {columns}

-- In batches, so that one purge never holds many row locks or one long transaction.
-- name: purge
DELETE FROM {schema}.offload_jobs WHERE id IN (
    SELECT id FROM {schema}.offload_jobs
    WHERE state IN ('succeeded', 'failed', 'cancelled')
        AND finished_at < to_timestamp(%(before)s)
    LIMIT %(limit)s)

-- A job queued by hand wakes the workers like an enqueue.
-- name: notify
SELECT pg_notify(%(channel)s, %(queue)s)


-- === Schedules =============================================================================

-- fired_until only moves forward.
-- name: advance_schedules
INSERT INTO {schema}.offload_schedules AS s (name, fired_until)
SELECT name, to_timestamp(mark) FROM unnest(%(names)s::text[], %(marks)s::float8[])
    AS m(name, mark)
ON CONFLICT (name) DO UPDATE SET fired_until =
    greatest(coalesce(s.fired_until, excluded.fired_until), excluded.fired_until)

-- name: pause_schedules
INSERT INTO {schema}.offload_schedules (name, paused)
SELECT name, %(paused)s FROM unnest(%(names)s::text[]) AS m(name)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused

-- name: schedule_states
SELECT name, paused, extract(epoch FROM fired_until)::float8 FROM {schema}.offload_schedules
WHERE name = ANY(%(names)s)


-- === Worker registry =======================================================================

-- One statement: rows of workers that stopped without forgetting themselves go first, and
-- the worker's own row is written with the server's clock. queues: empty for every queue.
-- name: record_worker
WITH lapsed AS (
    DELETE FROM {schema}.offload_workers WHERE expires_at <= now() AND id <> %(id)s)
INSERT INTO {schema}.offload_workers AS w
    (id, host, pid, queues, concurrency, started_at, running, seen_at, expires_at)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s,
    to_timestamp(%(started_at)s), %(running)s, now(),
    now() + make_interval(secs => %(ttl)s))
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, queues = excluded.queues,
    concurrency = excluded.concurrency, started_at = excluded.started_at,
    running = excluded.running, seen_at = excluded.seen_at, expires_at = excluded.expires_at

-- name: forget_worker
DELETE FROM {schema}.offload_workers WHERE id = %(id)s

-- name: live_workers
SELECT id, host, pid, queues, concurrency, extract(epoch FROM started_at)::float8, running,
    extract(epoch FROM seen_at)::float8
FROM {schema}.offload_workers WHERE expires_at > now() ORDER BY id


-- === Flow control (flow.py) ================================================================
-- Run only for claims and outcomes of jobs with limits, each set in one transaction that
-- first takes the lock of every key it weighs (flow_lock), so that the claims and releases
-- of one group or bucket go one at a time while every other key's go on.

-- One transaction-level advisory lock per key, taken in the order given (sorted by the
-- caller, so two transactions never wait on each other in a circle). {prefix} keeps the
-- keys of two schemas apart.
-- name: flow_lock
SELECT pg_advisory_xact_lock(hashtextextended(%(prefix)s::text || k, 0))
FROM unnest(%(keys)s::text[]) AS k

-- Read after flow_lock, so by a snapshot that holds every claim of the group committed
-- before this one took its turn.
-- name: flow_running
SELECT conc_key, count(*) FROM {schema}.offload_jobs
WHERE conc_key = ANY(%(keys)s::text[]) AND state = 'running'
GROUP BY conc_key

-- Each key's bucket (NULL tokens: none yet) and the server's clock as this statement runs,
-- after flow_lock: not now(), the transaction's start, which may be before the lock's last
-- holder saved the bucket, whose time a refill by now() would count twice.
-- name: flow_buckets
SELECT k, b.tokens, extract(epoch FROM b.at)::float8,
    extract(epoch FROM clock_timestamp())::float8
FROM unnest(%(keys)s::text[]) AS k LEFT JOIN {schema}.offload_buckets AS b ON b.key = k

-- ats: the time each bucket was refilled to (flow.admit).
-- name: flow_save_buckets
INSERT INTO {schema}.offload_buckets AS b (key, tokens, at)
SELECT k, t, to_timestamp(a)
FROM unnest(%(keys)s::text[], %(tokens)s::float8[], %(ats)s::float8[]) AS s(k, t, a)
ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at

-- Claimed jobs put back as they were before the claim, held by a limit; no attempt used.
-- For a slot, run_at goes out of every claim's reach (flow.FAR) and held_run_at keeps the
-- due time; for a token, run_at is when the token will be there.
-- name: flow_hold
UPDATE {schema}.offload_jobs AS j SET state = 'queued', attempt = j.attempt - 1,
    lease_until = NULL,
    started_at = CASE WHEN j.attempt = 1 THEN NULL ELSE j.started_at END,
    worker_id = CASE WHEN j.attempt = 1 THEN NULL ELSE j.worker_id END,
    waiting = h.waiting,
    held_run_at = CASE WHEN h.waiting = 'concurrency' THEN j.run_at END,
    run_at = to_timestamp(h.due)
FROM unnest(%(ids)s::uuid[], %(waiting)s::text[], %(dues)s::float8[]) AS h(id, waiting, due)
WHERE j.id = h.id AND j.state = 'running' AND j.worker_id = %(worker)s

-- The due jobs of a bucket not yet weighed (none with a slot to wait for too), held for
-- its next tokens in claim order as if each claim had held them: the k-th is due when
-- its token comes in, base + (k - tokens) / rate (flow.admit). Returns how many.
-- name: flow_hold_ahead
WITH ahead AS (
    SELECT id, priority, run_at FROM {schema}.offload_jobs
    WHERE rate_key = %(key)s AND state = 'queued' AND waiting IS NULL AND run_at <= now()
        AND conc_key IS NULL
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), numbered AS (
    SELECT id, row_number() OVER (ORDER BY priority DESC, run_at, id) AS k FROM ahead
)
UPDATE {schema}.offload_jobs AS j SET waiting = 'rate_limit',
    run_at = to_timestamp(%(base)s + (numbered.k - %(tokens)s) / %(rate)s)
FROM numbered WHERE j.id = numbered.id
RETURNING 1

-- The limited jobs the claim keeps no longer wait (those it held before).
-- name: flow_admitted
UPDATE {schema}.offload_jobs SET waiting = NULL
WHERE id = ANY(%(ids)s::uuid[]) AND waiting IS NOT NULL

-- Jobs held for a slot of a group that now has one free go back to their due time; the
-- next claim takes as many as there are slots and holds the rest again. Returns their
-- queues, to wake the workers there.
-- name: flow_release
UPDATE {schema}.offload_jobs AS j SET waiting = NULL, run_at = j.held_run_at,
    held_run_at = NULL
WHERE j.waiting = 'concurrency' AND j.state = 'queued' AND j.conc_key = ANY(%(keys)s::text[])
    AND j.conc_limit > (SELECT count(*) FROM {schema}.offload_jobs AS r
        WHERE r.conc_key = j.conc_key AND r.state = 'running')
RETURNING j.queue

-- The groups that hold jobs for a slot: what the reaper's pass looks at, in case a release
-- after an outcome did not get through.
-- name: flow_held_groups
SELECT DISTINCT conc_key FROM {schema}.offload_jobs
WHERE waiting = 'concurrency' AND state = 'queued'

-- For each key: jobs running under it, jobs waiting on it (held for a slot or a token),
-- and its bucket's tokens as of its last refill (NULL: no bucket).
-- name: flow_usage
SELECT k,
    (SELECT count(*) FROM {schema}.offload_jobs WHERE conc_key = k AND state = 'running'),
    (SELECT count(*) FROM {schema}.offload_jobs
        WHERE conc_key = k AND waiting = 'concurrency' AND state = 'queued')
    + (SELECT count(*) FROM {schema}.offload_jobs
        WHERE rate_key = k AND waiting = 'rate_limit' AND state = 'queued'),
    (SELECT tokens FROM {schema}.offload_buckets WHERE key = k)
FROM unnest(%(keys)s::text[]) AS k


-- === Backlog limits (enqueue.py) ===========================================================
-- Run only for a batch that holds a job with a backlog limit, in a transaction that takes
-- flow_lock for each capped task and queue, then inserts (enqueue_limited), then counts.

-- The queued jobs of each task that were enqueued with its limit (offload_jobs_capped) and
-- of each queue, whatever their task (offload_jobs_claim_queue), keyed as queued_depths
-- reports them; a name without queued jobs has no row. Read after the lock, so by a
-- snapshot that holds every capped enqueue committed before.
-- name: caps_queued
SELECT 'task:' || task, count(*) FROM {schema}.offload_jobs
WHERE task = ANY(%(tasks)s::text[]) AND state = 'queued' AND max_queued IS NOT NULL
GROUP BY task
UNION ALL
SELECT 'queue:' || queue, count(*) FROM {schema}.offload_jobs
WHERE queue = ANY(%(queues)s::text[]) AND state = 'queued'
GROUP BY queue
