-- Layout version 2: the queue registry holds every queue that has jobs.
--
-- A claim over all queues reads offload_queues to know which ranges of the claim index to
-- merge. Files of the first layout had no registry, and step 0 created it empty: their jobs
-- were never claimed by a worker that listens on every queue. Registering the queues of the
-- jobs already here mends such files; on any other file it adds nothing.
INSERT OR IGNORE INTO offload_queues (name) SELECT DISTINCT queue FROM offload_jobs;
