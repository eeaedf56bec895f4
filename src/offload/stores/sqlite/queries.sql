-- The SQLite store's queries, by name (see queries.py for the format). {slot}: a template
-- that Python fills in, where the query's caller says how. Times are REAL seconds since the
-- epoch; ? are bound parameters, in order.


-- === Connection and layout =================================================================

-- name: user_version
PRAGMA user_version

-- Layout steps set the version once they have all run (schema.migrate); PRAGMA values cannot
-- be bound, so {version} is an integer formatted in.
-- name: set_user_version
PRAGMA user_version = {version}

-- name: wal
PRAGMA journal_mode=WAL

-- {level}: full, extra or normal (from the URL, or normal for a batch of claims and
-- completions only: see writer.Writer.run_batch).
-- name: synchronous
PRAGMA synchronous={level}

-- name: foreign_keys
PRAGMA foreign_keys=ON

-- {pages}: writer.BACKSTOP_PAGES.
-- name: wal_autocheckpoint
PRAGMA wal_autocheckpoint={pages}

-- Lock waits are retried by the writer itself once the file is open (writer.LOCK_RETRY_FIRST).
-- name: no_busy_timeout
PRAGMA busy_timeout=0

-- name: checkpoint
PRAGMA wal_checkpoint(PASSIVE)

-- Changes whenever another connection commits: the cross-process wake-up.
-- name: data_version
PRAGMA data_version

-- A file from before versioning may keep the totals already (schema.py, step 1).
-- name: counts_table_exists
SELECT 1 FROM sqlite_master WHERE type='table' AND name='offload_counts'

-- Whether step 5's column is there already (see schema._SKIP_IF).
-- name: history_column_exists
SELECT 1 FROM pragma_table_info('offload_jobs') WHERE name='history'

-- Whether step 6's columns are there already (see schema._SKIP_IF).
-- name: flow_columns_exist
SELECT 1 FROM pragma_table_info('offload_jobs') WHERE name='rate_key'


-- === Totals (offload_counts) ===============================================================

-- name: tally
INSERT INTO offload_counts (queue, state, n) VALUES (?, ?, ?)
ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n

-- name: counts
SELECT queue, state, n FROM offload_counts WHERE n > 0


-- === Enqueue ===============================================================================

-- Keyless rows, {rows} of them in one statement: job_row repeated, joined by ", " (see
-- ops._MULTI). The twelve parameters of a row are those of insert_keyed.
-- name: insert_jobs
INSERT INTO offload_jobs (id, task, queue, args, kwargs, state, priority, attempt,
    max_attempts, run_at, enqueued_at, timeout, key, meta) VALUES {rows}

-- name: job_row
(?, ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?, ?)

-- name: insert_keyed
INSERT INTO offload_jobs (id, task, queue, args, kwargs, state, priority, attempt,
    max_attempts, run_at, enqueued_at, timeout, key, meta)
VALUES (?, ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task, key) WHERE key IS NOT NULL DO NOTHING

-- name: add_queue
INSERT OR IGNORE INTO offload_queues (name) VALUES (?)

-- name: queues
SELECT name FROM offload_queues


-- === Reading jobs ==========================================================================

-- Whole rows, in the column order of ops.record.
-- name: job_by_key
SELECT id, task, queue, args, kwargs, state, priority, attempt, max_attempts, run_at,
    enqueued_at, timeout, started_at, finished_at, lease_until, worker_id, key, result,
    error, progress, meta, cancel_requested, history, waiting, held_run_at
FROM offload_jobs WHERE task=? AND key=?

-- name: job_by_id
SELECT id, task, queue, args, kwargs, state, priority, attempt, max_attempts, run_at,
    enqueued_at, timeout, started_at, finished_at, lease_until, worker_id, key, result,
    error, progress, meta, cancel_requested, history, waiting, held_run_at
FROM offload_jobs WHERE id=?

-- Newest first, a page at a time. {where}: empty, or WHERE and the list_* conditions that
-- the filter asks for, joined by AND (store.SQLiteStore.list); the last ? is the page size.
-- name: list_jobs
SELECT id, task, queue, args, kwargs, state, priority, attempt, max_attempts, run_at,
    enqueued_at, timeout, started_at, finished_at, lease_until, worker_id, key, result,
    error, progress, meta, cancel_requested, history, waiting, held_run_at
FROM offload_jobs {where} ORDER BY id DESC LIMIT ?

-- {marks}: one ? per value.
-- name: list_states
state IN ({marks})

-- name: list_tasks
task IN ({marks})

-- name: list_queues
queue IN ({marks})

-- The cursor (the last id of the previous page) or the filter's upper time bound as an id,
-- whichever is lower; the lower time bound as an id.
-- name: list_before
id < ?

-- name: list_from
id >= ?

-- One job per task at most (the key is unique per task), by offload_jobs_key.
-- name: list_key_tasks
task IN ({marks}) AND key = ?

-- A key of any task: the tasks that hold keys, found by a skip-scan of offload_jobs_key (one
-- seek per task name, not a read of every keyed job), then one seek per task as above.
-- name: list_key
task IN (
    WITH RECURSIVE keyed(task) AS (
        SELECT min(task) FROM offload_jobs WHERE key IS NOT NULL
        UNION ALL
        SELECT (SELECT min(task) FROM offload_jobs WHERE key IS NOT NULL AND task > keyed.task)
        FROM keyed WHERE keyed.task IS NOT NULL
    )
    SELECT task FROM keyed WHERE task IS NOT NULL
) AND key = ?

-- Finished jobs per bucket (floor(finished_at / bucket), as finished_at is positive) and
-- state, read from offload_jobs_finished alone, which holds both columns.
-- name: activity
SELECT CAST(finished_at / ? AS INTEGER), state, count(*) FROM offload_jobs
WHERE finished_at IS NOT NULL AND finished_at >= ?
    AND state IN ('succeeded', 'failed', 'cancelled')
GROUP BY 1, 2


-- === Claim =================================================================================

-- Takes the jobs that {select} picks. Returns only the columns it did not set itself: each
-- returned column costs about a third of a microsecond per job, on the writer's path that
-- every worker takes turns on (ops._claimed puts the others back).
-- name: claim
-- The last column is not NULL for a job with limits, which flow.admit then weighs. A job's
-- waiting stays for admit to read: only a job held for its token can be claimed with one.
UPDATE offload_jobs SET state='running', attempt=attempt+1, lease_until=?, worker_id=?,
    started_at=?, cancel_requested=0
WHERE id IN ({select})
RETURNING id, task, queue, args, kwargs, priority, attempt, max_attempts, run_at, enqueued_at,
    timeout, finished_at, key, result, error, progress, meta, coalesce(rate_key, conc_key)

-- The due jobs of one queue, in claim order.
-- name: claim_pick_one
SELECT id FROM offload_jobs WHERE state='queued' AND queue=? AND run_at<=?
ORDER BY priority DESC, run_at, id LIMIT ?

-- Several queues: one index range per queue ({parts}: claim_pick_part once per queue,
-- joined by UNION ALL), merged. An IN list would make SQLite sort every due row.
-- name: claim_pick_merged
SELECT id FROM ({parts}) ORDER BY priority DESC, run_at, id LIMIT ?

-- name: claim_pick_part
SELECT * FROM (SELECT id, priority, run_at FROM offload_jobs
    WHERE state='queued' AND queue=? AND run_at<=?
    ORDER BY priority DESC, run_at, id LIMIT ?)


-- === Running jobs: lease, progress, outcomes ===============================================
-- Each change to a running job holds only while the caller still holds its lease: the same
-- worker, the same attempt.

-- name: heartbeat
UPDATE offload_jobs SET lease_until=?
WHERE id=? AND state='running' AND worker_id=? AND attempt=?
RETURNING cancel_requested

-- name: set_progress
UPDATE offload_jobs SET progress=?
WHERE id=? AND state='running' AND worker_id=? AND attempt=?

-- A batch of successes in one executemany (ops._all_succeeded): no RETURNING there.
-- name: succeeded_many
UPDATE offload_jobs SET state='succeeded', result=?, error=NULL, finished_at=?,
    lease_until=NULL, cancel_requested=0
WHERE id=? AND state='running' AND worker_id=? AND attempt=?

-- name: succeeded
UPDATE offload_jobs SET state='succeeded', result=?, error=NULL, finished_at=?,
    lease_until=NULL, cancel_requested=0
WHERE id=? AND state='running' AND worker_id=? AND attempt=?
RETURNING queue, state

-- The first ? is the state: failed or cancelled.
-- name: finished
UPDATE offload_jobs SET state=?, error=?, finished_at=?, lease_until=NULL, cancel_requested=0
WHERE id=? AND state='running' AND worker_id=? AND attempt=?
RETURNING queue, state

-- A failure with its error, which joins the history too. {history}: append_history.
-- name: failed
UPDATE offload_jobs SET state='failed', error=?, history={history}, finished_at=?,
    lease_until=NULL, cancel_requested=0
WHERE id=? AND state='running' AND worker_id=? AND attempt=?
RETURNING queue, state

-- Handed back unrun (a worker shutting down): the attempt does not count, and a job whose
-- cancellation was asked for meanwhile ends cancelled instead.
-- name: released
UPDATE offload_jobs SET
    state=CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
    finished_at=CASE WHEN cancel_requested THEN ? ELSE finished_at END,
    run_at=?,
    attempt=attempt-CASE WHEN cancel_requested THEN 0 ELSE 1 END,
    started_at=CASE WHEN attempt=1 AND NOT cancel_requested THEN NULL ELSE started_at END,
    worker_id=CASE WHEN attempt=1 AND NOT cancel_requested THEN NULL ELSE worker_id END,
    lease_until=NULL, cancel_requested=0
WHERE id=? AND state='running' AND worker_id=? AND attempt=?
RETURNING queue, state

-- {history}: append_history, or history itself for a retry without an error.
-- name: retried
UPDATE offload_jobs SET state='queued', error=?, history={history}, run_at=?, lease_until=NULL,
    cancel_requested=0
WHERE id=? AND state='running' AND worker_id=? AND attempt=?
RETURNING queue, state

-- Queued again with its attempt kept, and room for one more.
-- name: requeued
UPDATE offload_jobs SET state='queued', run_at=?, lease_until=NULL,
    max_attempts=max(max_attempts, attempt+1)
WHERE id=? AND state='running' AND worker_id=? AND attempt=?
RETURNING queue, state

-- Successes whose queue the caller did not know, by queue. {marks}: one ? per id.
-- The history with the entry bound to ? appended (JSON text), its oldest entry dropped
-- once records.HISTORY_MAX (the 9 is one below it) are there; composed into the error
-- paths' statements above. NULL is a row from before the history was kept.
-- name: append_history
json_insert(
    CASE WHEN json_array_length(coalesce(history, '[]')) > 9
        THEN json_remove(history, '$[0]') ELSE coalesce(history, '[]') END,
    '$[#]', json(?))

-- name: queues_of
SELECT queue, count(*) FROM offload_jobs WHERE id IN ({marks}) GROUP BY queue


-- === Expired leases ========================================================================

-- name: expired
SELECT id, attempt, max_attempts, worker_id, queue FROM offload_jobs
WHERE state='running' AND lease_until < ?

-- {history}: append_history, the lapsed lease's error joining the history.
-- name: expired_fail
UPDATE offload_jobs SET state='failed', error=?, history={history}, finished_at=?,
    lease_until=NULL
WHERE id=? AND state='running' AND attempt=?

-- name: expired_requeue
UPDATE offload_jobs SET state='queued', run_at=?, lease_until=NULL, error=?, history={history}
WHERE id=? AND state='running' AND attempt=?


-- === Next due time (ops.next_run_at) =======================================================

-- The earliest job of the highest priority of one queue: one seek in the claim index.
-- name: next_top
SELECT priority, run_at FROM offload_jobs WHERE state='queued' AND queue=?
ORDER BY priority DESC, run_at LIMIT 1

-- The same, below a priority already looked at.
-- name: next_below
SELECT priority, run_at FROM offload_jobs WHERE state='queued' AND queue=? AND priority<?
ORDER BY priority DESC, run_at LIMIT 1

-- The rest of a queue with more priorities than ops.SEEK_PRIORITIES, in one scan.
-- name: next_rest
SELECT min(run_at) FROM offload_jobs WHERE state='queued' AND queue=? AND priority<?


-- === Operator actions ======================================================================

-- name: cancel_queued
UPDATE offload_jobs SET state='cancelled', finished_at=?
WHERE id=? AND state='queued'
RETURNING queue

-- A running job's worker reads it with cancel_flagged (CancelSignals), or at its next
-- heartbeat.
-- name: cancel_running
UPDATE offload_jobs SET cancel_requested=1 WHERE id=? AND state='running'

-- A worker's running jobs whose cancellation was asked for: read from the running rows'
-- partial index (offload_jobs_lease), which holds no more rows than jobs in flight.
-- name: cancel_flagged
SELECT id FROM offload_jobs
WHERE state='running' AND worker_id=? AND cancel_requested

-- name: retry
UPDATE offload_jobs SET state='queued', attempt=0, run_at=?, finished_at=NULL,
    error=NULL, cancel_requested=0, lease_until=NULL
WHERE id=?

-- One finished job, by hand (the store checked its state in the same transaction).
-- name: delete
DELETE FROM offload_jobs WHERE id = ? AND state IN ('succeeded', 'failed', 'cancelled')

-- What purge_delete removes, by queue and state, for the totals.
-- name: purge_counts
SELECT queue, state, count(*) FROM offload_jobs
WHERE finished_at IS NOT NULL AND finished_at < ?
    AND state IN ('succeeded', 'failed', 'cancelled')
GROUP BY queue, state

-- name: purge_delete
DELETE FROM offload_jobs
WHERE finished_at IS NOT NULL AND finished_at < ?
    AND state IN ('succeeded', 'failed', 'cancelled')


-- === Schedules =============================================================================

-- fired_until only moves forward.
-- name: advance_schedule
INSERT INTO offload_schedules (name, fired_until) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET fired_until =
    max(coalesce(fired_until, excluded.fired_until), excluded.fired_until)

-- name: pause_schedule
INSERT INTO offload_schedules (name, paused) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused

-- {marks}: one ? per name.
-- name: schedule_states
SELECT name, paused, fired_until FROM offload_schedules WHERE name IN ({marks})


-- === Worker registry =======================================================================

-- One row per live worker; queues is a JSON array (empty: every queue).
-- name: record_worker
INSERT INTO offload_workers
    (id, host, pid, queues, concurrency, started_at, running, seen_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, queues = excluded.queues,
    concurrency = excluded.concurrency, started_at = excluded.started_at,
    running = excluded.running, seen_at = excluded.seen_at, expires_at = excluded.expires_at

-- Workers that stopped without forgetting themselves, dropped by the next record.
-- name: drop_lapsed_workers
DELETE FROM offload_workers WHERE expires_at <= ?

-- name: forget_worker
DELETE FROM offload_workers WHERE id = ?

-- name: live_workers
SELECT id, host, pid, queues, concurrency, started_at, running, seen_at
FROM offload_workers WHERE expires_at > ? ORDER BY id


-- === Flow control (flow.py) ===============================================================

-- name: set_limits
UPDATE offload_jobs SET rate_key=?, rate=?, burst=?, conc_key=?, conc_limit=?, max_queued=?
WHERE id=?

-- name: queued_capped
SELECT count(*) FROM offload_jobs WHERE task=? AND state='queued' AND max_queued IS NOT NULL

-- name: queued_in_queue
SELECT coalesce(sum(n), 0) FROM offload_counts WHERE queue=? AND state='queued'

-- name: key_on_record
SELECT 1 FROM offload_jobs WHERE task=? AND key=?

-- name: limits_of
SELECT id, rate_key, rate, burst, conc_key, conc_limit, waiting FROM offload_jobs WHERE id=?

-- name: admitted
UPDATE offload_jobs SET waiting=NULL WHERE id=? AND waiting IS NOT NULL

-- name: running_in_group
SELECT count(*) FROM offload_jobs WHERE conc_key=? AND state='running'

-- name: bucket
SELECT tokens, at FROM offload_buckets WHERE key=?

-- name: save_bucket
INSERT INTO offload_buckets (key, tokens, at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET tokens=excluded.tokens, at=excluded.at

-- A claimed job put back as it was before its claim, held by a limit. For a slot, run_at
-- goes out of every claim's reach and held_run_at keeps the due time; for a token, run_at
-- is when the token will be there.
-- name: hold
UPDATE offload_jobs SET state='queued', attempt=attempt-1, lease_until=NULL, worker_id=NULL,
    started_at=NULL, waiting=?, run_at=?, held_run_at=? WHERE id=?

-- name: any_held
SELECT 1 FROM offload_jobs WHERE waiting='concurrency' LIMIT 1

-- Jobs held for a slot whose group now has one free go back to their due time; the next
-- claim takes as many as there are slots and holds the rest again.
-- name: release_held
UPDATE offload_jobs SET waiting=NULL, run_at=held_run_at, held_run_at=NULL
WHERE waiting='concurrency' AND state='queued' AND conc_limit > (
    SELECT count(*) FROM offload_jobs AS r WHERE r.conc_key=offload_jobs.conc_key
    AND r.state='running')

-- name: held_in_group
SELECT count(*) FROM offload_jobs WHERE conc_key=? AND waiting='concurrency'

-- name: rate_waiting
SELECT count(*) FROM offload_jobs WHERE rate_key=? AND waiting='rate_limit' AND state='queued'
