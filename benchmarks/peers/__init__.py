"""offload on Redis beside its peers, on one workload, in one run (see run.py)."""
