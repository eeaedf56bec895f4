-- Layout version 1: the worker registry, every live worker with what it serves.
--
-- The dashboard and `offload info` could only name a worker through a running job's
-- worker_id, so an idle worker was invisible and nothing said when one last answered. Each
-- worker writes its row once per heartbeat tick (WorkerRegistry.record_worker), with
-- seen_at and expires_at by the server's clock; a row whose expires_at has passed is a
-- worker that stopped without saying so, left out of every read and deleted by the next
-- write. A handful of rows, so no index beyond the key.
CREATE TABLE {schema}.offload_workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    queues      text[] NOT NULL,
    concurrency integer NOT NULL,
    started_at  timestamptz NOT NULL,
    running     integer NOT NULL,
    seen_at     timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
