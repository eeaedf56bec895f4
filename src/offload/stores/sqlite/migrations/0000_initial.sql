-- Layout version 0: the offload tables as they were before files recorded a version.
-- user_version 0 cannot tell a new file from one made before versioning, so this step runs
-- on both, and creates each object only IF NOT EXISTS so that it completes either.
-- Times are REAL seconds since the epoch.

-- The jobs, one row each (docs/sqlite.md describes the columns).
CREATE TABLE IF NOT EXISTS offload_jobs (
    id               TEXT PRIMARY KEY,
    task             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    args             TEXT NOT NULL,
    kwargs           TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           REAL NOT NULL,
    enqueued_at      REAL NOT NULL,
    timeout          REAL,
    started_at       REAL,
    finished_at      REAL,
    lease_until      REAL,
    worker_id        TEXT,
    key              TEXT,
    result           TEXT,
    error            TEXT,
    progress         TEXT,
    meta             TEXT NOT NULL DEFAULT '{}',
    cancel_requested INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Idempotency: a key is unique per task name while the job is on record.
CREATE UNIQUE INDEX IF NOT EXISTS offload_jobs_key
    ON offload_jobs (task, key) WHERE key IS NOT NULL;

-- Claim order within one queue; partial so that finished rows cost nothing. A claim over
-- several queues merges one range per queue (see offload_queues), which is cheaper than
-- keeping a second index over all queues on every insert.
CREATE INDEX IF NOT EXISTS offload_jobs_claim_queue
    ON offload_jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';

-- Every queue name ever used, so that "claim from all queues" can stay index-driven.
CREATE TABLE IF NOT EXISTS offload_queues (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;

-- The reaper looks only at running rows; the purge only at finished ones.
CREATE INDEX IF NOT EXISTS offload_jobs_lease
    ON offload_jobs (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS offload_jobs_finished
    ON offload_jobs (finished_at) WHERE finished_at IS NOT NULL;

-- One row per schedule that a scheduler has seen or an operator paused. fired_until: every
-- slot at or before it was enqueued or passed over (REAL seconds since the epoch).
CREATE TABLE IF NOT EXISTS offload_schedules (
    name        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    fired_until REAL
) WITHOUT ROWID;
