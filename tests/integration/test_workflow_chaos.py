"""Chords through three ``offload worker`` processes while one of them is SIGKILLed (and a
fresh one started in its place) every two seconds, with a lease short enough that the
killed workers' jobs come back within the run.

What it holds the store to (DESIGN §13) is checked from the runs' own records
(``tests.integration.wfjobs``), not only from the store's: every callback ran after the
successful run of each of its members ended, got every member's result in member order,
and succeeded once in the store; a duplicate run (at-least-once) happened only for an
attempt that a kill cut short; and nothing is left queued or running.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from offload import Job, JobState, Offload, chord
from offload.stores.base import Workflows
from tests.integration import wfjobs

ROOT = Path(__file__).resolve().parents[2]
OFFLOAD = Path(sys.executable).with_name("offload")
CHORDS = 1_000
MEMBERS = 10
WORKERS = 3
KILL_EVERY = 2.0
# Short, so a killed worker's jobs are requeued (lease + a third of it for the reaper)
# about three seconds after the kill, well inside the run.
LEASE = 2.0
# The chords arrive in waves over about twenty seconds, so that every kill finds work in
# flight instead of a drained queue.
WAVES = 20
WAVE_EVERY = 1.0


@dataclass
class Run:
    """One attempt of one step, from its start and end lines (no end: it was killed)."""

    start: float
    end: float | None = None
    got: str = "-"


@dataclass
class Runs:
    """The runs of every step, keyed (task, chord, member) then attempt."""

    by_step: dict[tuple[str, int, int], dict[int, list[Run]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    @classmethod
    def read(cls, path: Path) -> Runs:
        runs = cls()
        for line in path.read_text().splitlines():
            kind, task, chord_n, member, attempt, _pid, at, got = line.split()
            attempts = runs.by_step[(task, int(chord_n), int(member))]
            if kind == "S":
                attempts[int(attempt)].append(Run(float(at)))
            else:
                run = attempts[int(attempt)][-1]
                run.end, run.got = float(at), got
        return runs


class Workers:
    """``offload worker`` processes on the test's store; ``kill`` SIGKILLs one and starts
    a fresh one in its place."""

    def __init__(self, url: str, runs: Path, log: Path) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "OFFLOAD_URL": url,
                    "WF_RUNS": str(runs)}  # fmt: skip
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kills = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        command = [str(OFFLOAD), "worker", "tests.integration.wfjobs:jobs", "--concurrency",
                   "32", "--lease", str(LEASE), "--log-level", "WARNING"]  # fmt: skip
        with self.log.open("ab") as out:
            return subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=out)

    def start(self, n: int) -> None:
        self.procs += [self.spawn() for _ in range(n)]

    def kill(self) -> None:
        victim = self.procs[self.kills % len(self.procs)]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.procs[self.kills % len(self.procs)] = self.spawn()
        self.kills += 1

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def killing(workers: Workers, done: asyncio.Event) -> None:
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), KILL_EVERY)
        except TimeoutError:
            await asyncio.to_thread(workers.kill)


async def unfinished(app: Offload) -> int:
    counts = await app.store.counts()
    return sum(n for (_, state), n in counts.items() if not state.finished)


async def until_settled(app: Offload, handles: list[Job[Any]], timeout: float) -> None:
    """Until every callback has finished (the store said so) and no job of any workflow is
    queued or running."""
    deadline = time.monotonic() + timeout
    pending = list(handles)
    while pending or await unfinished(app):
        assert time.monotonic() < deadline, (
            f"{len(pending)} of {len(handles)} chords not finished, "
            f"{await unfinished(app)} jobs queued or running"
        )
        await asyncio.sleep(0.25)
        still = []
        for handle in pending:
            if not (await handle.refresh()).state.finished:
                still.append(handle)
        pending = still


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_every_chord_completes_once_in_order_while_workers_are_killed(
    store_url: str, tmp_path: Path
) -> None:
    """1,000 chords of 10 members and a callback, 3 workers, one SIGKILLed every 2 s: every
    chord succeeds with its callback's one succeeded record, the callback's first start
    follows the end of each member's successful run, it got every member's result in
    order, repeated runs are only of attempts a kill cut short, and nothing is left."""
    runs_path = tmp_path / "runs"
    runs_path.touch()
    steps_of = wfjobs.Steps(Offload(store_url, embedded_worker=False))
    app = steps_of.app
    if not isinstance(app.store, Workflows):
        pytest.skip(
            f"{type(app.store).__name__} keeps no workflows yet (the optional "
            "Workflows capability), so there is nothing to kill workers under"
        )
    workers = Workers(store_url, runs_path, tmp_path / "workers.log")
    done = asyncio.Event()
    started = time.monotonic()
    async with app:
        workers.start(WORKERS)
        killer = asyncio.create_task(killing(workers, done))
        try:
            handles: list[Job[Any]] = []
            per_wave = CHORDS // WAVES
            for wave in range(WAVES):
                due = started + wave * WAVE_EVERY
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                numbers = range(wave * per_wave, (wave + 1) * per_wave)
                handles += await asyncio.gather(
                    *(
                        chord(
                            [steps_of.member.s(n, m) for m in range(MEMBERS)],
                            steps_of.callback.s(chord=n),
                        ).enqueue()
                        for n in numbers
                    )
                )
            await until_settled(app, handles, timeout=90)
        finally:
            # The killer ends its kill in hand first, so no worker it starts outlives the test.
            done.set()
            await killer
            workers.stop()
        elapsed = time.monotonic() - started
        steps = [await handle.steps() for handle in handles]
        finals = [await handle.refresh() for handle in handles]
        counts = await app.store.counts()

    runs = Runs.read(runs_path)
    assert workers.kills >= WAVES * WAVE_EVERY / KILL_EVERY - 2, (
        f"only {workers.kills} kills in {elapsed:.1f} s"
    )
    assert {JobState.SUCCEEDED: CHORDS * (MEMBERS + 1)} == {
        state: n for (_, state), n in counts.items() if n
    }
    assert [MEMBERS] * CHORDS == [json.loads(job.record.result or "null") for job in finals]
    retried = 0
    duplicates: Counter[int] = Counter()
    for n, (records, final) in enumerate(zip(steps, finals, strict=True)):
        assert [JobState.SUCCEEDED] * (MEMBERS + 1) == [r.state for r in records]
        *members, callback = records
        assert final.id == callback.id
        assert ["wf.member"] * MEMBERS + ["wf.callback"] == [r.task for r in records]
        # The end of each member's successful run, from its own line and from the store.
        ends = []
        for m, record in enumerate(members):
            attempts = runs.by_step[("member", n, m)]
            assert all(1 == len(each) for each in attempts.values()), f"{n}/{m}: {attempts}"
            (run,) = attempts[record.attempt]
            assert run.end is not None, f"member {m} of chord {n} succeeded without ending"
            assert record.finished_at is not None
            ends.append(max(run.end, record.finished_at))
            retried += record.attempt > 1
        attempts = runs.by_step[("callback", n, -1)]
        first_start = min(run.start for each in attempts.values() for run in each)
        assert first_start >= max(ends), f"chord {n}'s callback started before its inputs ended"
        # Each attempt is claimed once (fencing), so it runs at most once; a run beyond the
        # first is of an attempt a kill cut short.
        assert all(1 == len(each) for each in attempts.values()), f"chord {n}: {attempts}"
        assert set(attempts) <= set(range(1, callback.attempt + 1))
        (succeeded,) = attempts[callback.attempt]
        expected = json.dumps([wfjobs.value(n, m) for m in range(MEMBERS)], separators=(",", ":"))
        assert expected == succeeded.got
        assert all(run.got in (expected, "-") for each in attempts.values() for run in each)
        duplicates[len(attempts)] += 1
        retried += callback.attempt > 1
    # The kills must have hit jobs in flight, or the test has shown nothing.
    assert retried > 0, f"no step was retried in {workers.kills} kills"
    print(
        f"\n{CHORDS} chords x {MEMBERS} in {elapsed:.1f} s, {workers.kills} kills, "
        f"{retried} steps retried, callback runs per chord: {dict(sorted(duplicates.items()))}"
    )
