"""FastAPI adapters for offload: the ``Background`` dependency and the jobs router.

Lives apart from the core so that ``offload`` itself never imports FastAPI (DESIGN §2).
"""

from offload.fastapi.background import Background, DurableTasks
from offload.fastapi.middleware import RequestLogMiddleware
from offload.fastapi.router import jobs_router
from offload.fastapi.schemas import Detail, JobErrorOut, JobOut, JobPageOut, ProgressOut

__all__ = [
    "Background",
    "Detail",
    "DurableTasks",
    "JobErrorOut",
    "JobOut",
    "JobPageOut",
    "ProgressOut",
    "RequestLogMiddleware",
    "jobs_router",
]
