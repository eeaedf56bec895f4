-- Layout version 4: the worker registry, every live worker with what it serves.
--
-- The dashboard and `offload info` could only name a worker through a running job's
-- worker_id, so an idle worker was invisible and nothing said when one last answered. Each
-- worker writes its row once per heartbeat tick (WorkerRegistry.record_worker); a row whose
-- expires_at has passed is a worker that stopped without saying so, left out of every read
-- and deleted by the next write. A handful of rows, so no index beyond the key.
CREATE TABLE IF NOT EXISTS offload_workers (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    queues      TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    running     INTEGER NOT NULL,
    seen_at     REAL NOT NULL,
    expires_at  REAL NOT NULL
) WITHOUT ROWID;
