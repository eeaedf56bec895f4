"""Tasks that handle secrets, for the redaction tests; ``offload jobs show --app`` loads it.

Registering a secret is per process: the module registers it at import, as an application
would, so every process that loads the app (worker, service, CLI with ``--app``) hides it.
"""

from __future__ import annotations

import logging
from typing import Annotated

from offload import JobContext, Offload
from offload.redaction import Secret, register_secret

KEYED = "kv-pass-1111"  # the value of keys that look secret
REGISTERED = "sk-live-2222-registered"  # registered with register_secret
MARKED = "4111-3333-card"  # passed to a Secret-marked parameter

register_secret(REGISTERED)

task_log = logging.getLogger("tests.pay")


def register(jobs: Offload) -> None:
    @jobs.task(name="tests.pay", retries=0)
    async def pay(ctx: JobContext, user: str, card: Annotated[str, Secret], api_token: str) -> None:
        task_log.info("paying with %s using %s", card, REGISTERED)
        ctx.logger.info("card %s token %s", card, api_token)
        raise ValueError(f"card {card} declined by gateway key {REGISTERED}")

    @jobs.task(name="tests.lookup")
    async def lookup(user: str) -> dict[str, object]:
        return {"user": user, "password": KEYED, "note": f"key {REGISTERED}"}


jobs = Offload(embedded_worker=False)
register(jobs)
