"""The web dashboard: a FastAPI router any app mounts, and ``offload dashboard`` to run it
alone. Server-rendered (Jinja2, autoescaped), working without JavaScript, and refused without
an auth dependency unless anonymous access is asked for by name.

Lives beside ``offload.fastapi`` as an adapter on top of ``Offload`` (DESIGN §2): the core
never imports it.
"""

from offload.dashboard.auth import (
    BasicAuth,
    BearerAuth,
    DashboardSettings,
    User,
    basic_auth,
    bearer_auth,
)
from offload.dashboard.router import dashboard_router

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "DashboardSettings",
    "User",
    "basic_auth",
    "bearer_auth",
    "dashboard_router",
]
