"""What every app of the HTTP benchmark shares: the request body and the settings it reads."""

from __future__ import annotations

import os

from pydantic import BaseModel, EmailStr, Field


class Registration(BaseModel):
    email: EmailStr
    name: str = Field(min_length=1, max_length=100)


def setting(name: str) -> str:
    """A required ``HTTP_BENCH_*`` variable; its absence stops the app naming it."""
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"{name} is not set: start this app through benchmarks.http_bench")
    return value
