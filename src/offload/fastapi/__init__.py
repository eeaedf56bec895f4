"""FastAPI adapters for offload: the ``Background`` dependency, the jobs router, and the
request middlewares (request logging, body size limit).

Lives apart from the core so that ``offload`` itself never imports FastAPI (DESIGN §2).
"""

from offload.fastapi.background import ENQUEUE_RESPONSES, Background, DurableTasks
from offload.fastapi.limits import DEFAULT_MAX_BODY_SIZE, BodySizeLimitMiddleware, BodyTooLarge
from offload.fastapi.middleware import RequestLogMiddleware
from offload.fastapi.router import jobs_router
from offload.fastapi.schemas import Detail, JobErrorOut, JobOut, JobPageOut, ProgressOut

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "ENQUEUE_RESPONSES",
    "Background",
    "BodySizeLimitMiddleware",
    "BodyTooLarge",
    "Detail",
    "DurableTasks",
    "JobErrorOut",
    "JobOut",
    "JobPageOut",
    "ProgressOut",
    "RequestLogMiddleware",
    "jobs_router",
]
