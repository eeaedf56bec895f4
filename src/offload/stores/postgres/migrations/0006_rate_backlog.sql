-- The queued jobs of a bucket that no claim has weighed yet, in claim order: a claim that
-- holds jobs for the bucket's tokens holds these too in one statement (flow_hold_ahead),
-- instead of one claim round after another while the tokens of the first ones go by.
CREATE INDEX offload_jobs_rate_ahead ON {schema}.offload_jobs (rate_key, priority DESC, run_at, id)
    WHERE state = 'queued' AND waiting IS NULL AND rate_key IS NOT NULL;
