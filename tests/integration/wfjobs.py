"""No-op workflow steps for the workflow chaos test's ``offload worker`` processes.

Each run appends ``S <task> <chord> <member> <attempt> <pid> <time> -`` when its body starts
and ``E ...`` when it ends to ``$WF_RUNS`` with one ``os.write`` of an ``O_APPEND`` file (a
SIGKILLed worker loses no line it wrote, and lines of several processes never interleave);
the callback's end line carries the list it got, as compact JSON, in place of the ``-``. So
the test checks the order of the runs and what each callback was given from the runs
themselves, not only from the store's records.

The test builds an app of its own on its store with ``Steps`` rather than swapping this
module's app's store, so nothing of this app's construction (its URL) reaches the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from offload import JobContext, Offload

_path = os.environ.get("WF_RUNS")
_fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if _path else -1
# Every SIGKILL of a worker costs each job it held an attempt; with one kill every 2 s a
# job can be caught more than once, and the test is about ordering, not about exhaustion.
RETRIES = 50
# Long enough that the workers always have steps in flight between the test's waves of
# chords (no-op steps drain a wave in milliseconds, and a kill would find idle workers),
# short enough that the run stays around twenty seconds; the steps only sleep.
STEP_SECONDS = 0.1


def _mark(kind: str, task: str, chord: int, member: int, attempt: int, got: str = "-") -> None:
    line = f"{kind} {task} {chord} {member} {attempt} {os.getpid()} {time.time():.6f} {got}\n"
    os.write(_fd, line.encode())


def value(chord: int, member: int) -> int:
    """What a member returns: distinct per member, so the callback's list shows its order."""
    return chord * 100 + member


async def _member(ctx: JobContext, chord: int, n: int) -> int:
    _mark("S", "member", chord, n, ctx.attempt)
    await asyncio.sleep(STEP_SECONDS)
    _mark("E", "member", chord, n, ctx.attempt)
    return value(chord, n)


async def _callback(ctx: JobContext, results: list[int], chord: int) -> int:
    _mark("S", "callback", chord, -1, ctx.attempt)
    await asyncio.sleep(STEP_SECONDS)
    _mark("E", "callback", chord, -1, ctx.attempt, json.dumps(results, separators=(",", ":")))
    return len(results)


class Steps:
    """The two steps of the test's chords, registered on ``app``."""

    def __init__(self, app: Offload) -> None:
        self.app = app
        self.member = app.task(name="wf.member", retries=RETRIES, backoff=0)(_member)
        self.callback = app.task(name="wf.callback", retries=RETRIES, backoff=0)(_callback)


jobs = Offload(os.environ.get("OFFLOAD_URL", "memory://"), embedded_worker=False)
Steps(jobs)
