"""The worker: claims jobs in batches, runs them, reports outcomes in batches.

One asyncio loop per process (DESIGN §5). Up to ``concurrency`` jobs are in flight; a
heartbeat renews their leases at a third of the lease; a reaper (every worker runs one)
requeues jobs whose worker died. SIGTERM drains, a second signal stops at once. What one
attempt's ending means (success, retry, failure, cancellation) is ``runner.py``'s; the worker
counts the outcomes it returns. The schedule loop it runs beside is ``scheduler.py``'s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

from offload.app import Offload
from offload.cancelling import CancelListener
from offload.errors import StoreUnavailable
from offload.executors import Executors
from offload.records import JobRecord
from offload.runner import JobRunner
from offload.scheduler import Scheduler
from offload.stores.base import (
    CancelSignals,
    ClaimRequest,
    Outcome,
    OutcomeKind,
    WorkerInfo,
    WorkerRegistry,
)

log = logging.getLogger("offload.worker")

# A lease long enough to ride out a GC pause or a slow store round trip; the heartbeat renews
# it every third, so a live worker never loses a job, and a dead one holds it at most this long.
DEFAULT_LEASE = 30.0
# Kubernetes sends SIGKILL 30 s after SIGTERM by default; drain a little sooner than that.
DEFAULT_GRACE = 25.0
# An idle worker re-checks the store at least this often even without a wake-up.
IDLE_RECHECK = 1.0
# Adaptive prefetch: hold at most about this many seconds of unstarted work, and never more
# than PREFETCH_PER_SLOT jobs per slot or PREFETCH_MAX in all. A job claimed ahead waits at
# most this long, which bounds what another worker could have run in the meantime.
PREFETCH_HORIZON = 0.02
PREFETCH_PER_SLOT = 4
PREFETCH_MAX = 512
# Weight of the newest run time in the moving mean that drives the prefetch.
RUN_TIME_WEIGHT = 0.05
# A store unreachable at start-up is tried again after this pause, doubling up to the cap.
OPEN_RETRY_FIRST = 0.5
OPEN_RETRY_CAP = 10.0
# Purge of finished jobs past retention: rare, cheap, idempotent across workers.
PURGE_INTERVAL = 600.0
# A store that fails to take outcomes is tried again after this pause.
COMPLETE_RETRY = 0.5
# After a second signal, the outcomes already on their way to the store get this long to
# land before the worker leaves without them (their jobs then run again once their leases
# lapse, as after a crash).
KILL_FLUSH = 0.5
# The worker's own loops are cancelled again this often, up to END_TRIES times, until they
# end (see _end); a library call that swallowed one cancellation does not swallow ten.
END_WAIT = 0.1
END_TRIES = 10


class Worker:
    """Runs the tasks registered on ``app`` from ``queues`` (all queues when ``None``)."""

    def __init__(
        self,
        app: Offload,
        *,
        concurrency: int = 64,
        queues: Sequence[str] | None = None,
        lease: float = DEFAULT_LEASE,
        grace: float = DEFAULT_GRACE,
        reaper_interval: float | None = None,
        install_signals: bool = True,
        threads: int | None = None,
        processes: int | None = None,
        prefetch: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if lease <= 0:
            raise ValueError(f"lease must be positive, got {lease}")
        self.app = app
        self.store = app.store
        self.concurrency = concurrency
        if prefetch is not None and prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        # Jobs claimed ahead of free slots: a fixed number when given, else adaptive (see
        # _prefetch_target) so short jobs come in large batches and long ones are not hoarded.
        self.prefetch = prefetch
        # Seconds per job (a moving mean). Until jobs are measured, assume long ones: claim no
        # more than free slots.
        self._mean_run = 1.0
        self.queues = list(queues) if queues else None
        self.lease = lease
        self.grace = grace
        self.reaper_interval = reaper_interval if reaper_interval is not None else lease / 3
        self.install_signals = install_signals
        self.id = f"w-{os.getpid()}-{secrets.token_hex(4)}"
        # The store's list of live workers, where it keeps one: this worker's entry is
        # written at start and on every heartbeat tick, and lapses one lease after the last.
        self._registry = self.store if isinstance(self.store, WorkerRegistry) else None
        self._host = socket.gethostname()
        self._started_at = 0.0
        self._record_failing = False
        self.executors = Executors(threads or concurrency, processes)
        self.started = asyncio.Event()
        # Attempts by how they ended (see ``stats``).
        self._counts = dict.fromkeys(OutcomeKind, 0)
        self._stop = asyncio.Event()
        self._force = False
        self._killed = asyncio.Event()
        self._closing = False
        self._running: dict[str, asyncio.Task[None]] = {}
        self._ready: collections.deque[JobRecord] = collections.deque()
        self._leases: dict[str, int] = {}
        # Running jobs whose cancellation the store asked for: the runner ends them
        # cancelled, not requeued, when their task is cancelled.
        self._cancel_requested: set[str] = set()
        self._pending: list[Outcome] = []
        self._pending_event = asyncio.Event()
        self._slot = asyncio.Event()
        self._flushed = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._runner = JobRunner(app, self.id, self.executors, self._cancel_requested, self._stop)

    @property
    def stats(self) -> dict[str, int]:
        """How many attempts this worker ended, by outcome, since it was made."""
        counts = self._counts
        return {
            "succeeded": counts[OutcomeKind.SUCCEEDED],
            "failed": counts[OutcomeKind.FAILED],
            "retried": counts[OutcomeKind.RETRY],
            "cancelled": counts[OutcomeKind.CANCELLED],
        }

    # --- control -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming and drain: running jobs get ``grace`` seconds to finish."""
        self._stop.set()
        self._slot.set()

    def kill(self) -> None:
        """Stop now: cancel running jobs and requeue them."""
        self._force = True
        self._killed.set()
        self.stop()
        for task in list(self._running.values()):
            task.cancel()

    def _on_signal(self, signum: int) -> None:
        if self._stop.is_set():
            log.warning(
                "second signal: stopping now",
                extra={"action": "worker.kill", "signal": signum, "worker_id": self.id},
            )
            self.kill()
        else:
            log.info(
                "signal received: draining",
                extra={"action": "worker.drain", "signal": signum, "worker_id": self.id},
            )
            self.stop()

    # --- main loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Work until ``stop()`` (or a signal), then drain and return.

        A store that cannot be reached at start-up is tried again with backoff, so that a
        worker started while Redis restarts (or before its server is up) waits for it
        instead of exiting; a stop or a signal meanwhile ends the wait."""
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            if await self._open():
                await self._work()
        finally:
            if self.install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _open(self) -> bool:
        """Open the app's store, retrying while it is unreachable; false if stopped first."""
        pause = OPEN_RETRY_FIRST
        while True:
            try:
                await self.app.open()
            except StoreUnavailable as exc:
                log.error(
                    "store unavailable at start-up; retrying",
                    extra={"action": "worker.open_error", "error": str(exc), "retry_in": pause},
                )
            else:
                return True
            await self._sleep_or_stop(pause)
            if self._stop.is_set():
                return False
            pause = min(pause * 2, OPEN_RETRY_CAP)

    async def _work(self) -> None:
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="offload-heartbeat"),
            asyncio.create_task(self._registry_loop(), name="offload-registry"),
            asyncio.create_task(self._reaper_loop(), name="offload-reaper"),
            # Every worker runs the scheduler; slot keys make the copies agree (DESIGN §6).
            asyncio.create_task(Scheduler(self.app).run(self._stop), name="offload-scheduler"),
        ]
        self._flusher = asyncio.create_task(self._flush_loop(), name="offload-flush")
        if isinstance(self.store, CancelSignals):  # cancels heard now, not at the heartbeat
            cancels = CancelListener(self.store, self.id, self._stop_cancelled)
            await cancels.start()
            background.append(asyncio.create_task(cancels.run(), name="offload-cancels"))
        log.info(
            "worker started",
            extra={
                "action": "worker.start",
                "worker_id": self.id,
                "queues": self.queues,
                "concurrency": self.concurrency,
                "tasks": sorted(self.app.tasks),
            },
        )
        await self._record(starting=True)
        self.started.set()
        self.app.workers.add(self.id)
        self.app.observers.worker_started(self.id)
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            await _end(background)
            unsaved = await self._close_flusher()
            await self._forget()
            self.executors.shutdown(wait=not self._force and not self.executors.busy)
            self.app.workers.discard(self.id)
            self.app.observers.worker_stopped(self.id)
            log.info(
                "worker stopped",
                extra={
                    "action": "worker.stop",
                    "worker_id": self.id,
                    **self.stats,
                    **({"unsaved": unsaved} if unsaved else {}),
                },
            )

    async def _claim_loop(self) -> None:
        store = self.store
        stop = self._stop
        ready = self._ready
        while not stop.is_set():
            # Claim when a slot is free and the prefetch buffer is at most half full, so
            # that claims come in batches rather than one job per freed slot.
            free = self.concurrency - len(self._running)
            prefetch = self._prefetch_target()
            if free <= 0 and len(ready) > prefetch // 2:
                self._slot.clear()
                await self._slot.wait()
                continue
            want = self.concurrency + prefetch - len(self._running) - len(ready)
            if want <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            try:
                records = await store.claim(self._claim(want))
                if not records:
                    records = await self._idle(want)
            except Exception as exc:
                log.error(
                    "claim failed; retrying",
                    extra={"action": "worker.claim_error", "worker_id": self.id, "error": str(exc)},
                )
                await self._sleep_or_stop(1.0)
                continue
            for record in records:
                if record.id in self._leases:  # a stale duplicate claim of our own
                    continue
                self._leases[record.id] = record.attempt
                # Claimed as the stop came: left waiting, so the drain gives them back.
                if len(self._running) < self.concurrency and not stop.is_set():
                    self._start(record)
                else:
                    ready.append(record)
            if records:
                # Let the jobs just started reach their first await before the next claim
                # is built and sent: a job that arrived at an idle worker starts sooner.
                await asyncio.sleep(0)

    def _claim(self, limit: int) -> ClaimRequest:
        return ClaimRequest(self.id, self.lease, limit, self.queues)

    def _prefetch_target(self) -> int:
        """How many claimed jobs may wait for a slot: about ``PREFETCH_HORIZON`` seconds of work.

        Each claim round trip costs far more than running a short job, so no-op-sized jobs are
        claimed in batches of hundreds; a job that runs for seconds is not claimed before a
        slot is free, so it never waits here while another worker sits idle."""
        if self.prefetch is not None:
            return self.prefetch
        ahead = self.concurrency * PREFETCH_HORIZON / max(self._mean_run, 1e-6)
        return min(int(ahead), PREFETCH_MAX, PREFETCH_PER_SLOT * self.concurrency)

    async def _idle(self, want: int) -> list[JobRecord]:
        """Wait until the store signals new work, the next delayed job is due, or stop; then
        claim up to ``want`` jobs (in the same round trip, where the store can)."""
        store = self.store
        timeout = IDLE_RECHECK
        try:
            due = await store.next_run_at(self.queues)
            if due is not None:
                timeout = min(timeout, max(due - await store.now(), 0.0))
        except Exception:  # the next claim attempt will report the store's state
            timeout = IDLE_RECHECK
        if timeout <= 0:
            return []
        return await store.wait_claim(self._claim(want), timeout, self._stop)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _start(self, record: JobRecord) -> None:
        self._running[record.id] = asyncio.create_task(self._execute(record))

    async def _drain(self) -> None:
        # Prefetched jobs never started: give them back at once for other workers, with the
        # claim undone so that their attempt count stays true.
        while self._ready:
            record = self._ready.popleft()
            self._pending.append(Outcome(record.id, self.id, record.attempt, OutcomeKind.RELEASE))
            self._pending_event.set()
        if self._running and not self._force:
            log.info(
                "draining running jobs",
                extra={
                    "action": "worker.draining",
                    "worker_id": self.id,
                    "running": len(self._running),
                    "grace": self.grace,
                },
            )
            _, pending = await asyncio.wait(list(self._running.values()), timeout=self.grace)
            for task in pending:
                task.cancel()
        else:
            for task in self._running.values():
                task.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=5.0)

    # --- one job -----------------------------------------------------------------------

    async def _execute(self, record: JobRecord) -> None:
        outcome: Outcome
        began = time.monotonic()
        try:
            outcome = await self._runner.run(record)
        finally:
            self._mean_run += (time.monotonic() - began - self._mean_run) * RUN_TIME_WEIGHT
            del self._running[record.id]
            if self._cancel_requested:
                self._cancel_requested.discard(record.id)
            # Hand the freed slot to a prefetched job at once, without a claim round trip.
            if self._ready and not self._stop.is_set():
                self._start(self._ready.popleft())
            self._slot.set()
        self._counts[outcome.kind] += 1
        self._pending.append(outcome)
        self._pending_event.set()

    # --- completions, leases, reaping ---------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._pending_event.wait()
            self._pending_event.clear()
            await self._flush_now()
            if self._closing and not self._pending:
                return

    async def _close_flusher(self) -> int:
        """Store every outcome reported so far, then end the flusher; returns how many could
        not be stored.

        The flusher's batch in flight is awaited, never cancelled: a cancelled ``complete``
        may never reach the store, and its jobs (reported finished in the worker's stats)
        would stay ``running`` until their leases lapsed and then run again. A store that
        keeps failing is tried until the leases lapse (later outcomes would be fenced off
        anyway); a second signal ends the wait at once, but for ``KILL_FLUSH``."""
        flusher = self._flusher
        if flusher is None:
            return 0
        self._closing = True
        self._pending_event.set()
        killed = asyncio.ensure_future(self._killed.wait())
        try:
            await asyncio.wait(
                (flusher, killed), timeout=self.lease, return_when=asyncio.FIRST_COMPLETED
            )
            if not flusher.done() and killed.done():
                await asyncio.wait((flusher,), timeout=KILL_FLUSH)
        finally:
            await _end([flusher, killed])
        unsaved = len(self._pending)
        if unsaved:
            log.error(
                "worker stopped with job outcomes it could not store; those jobs run again "
                "once their leases lapse",
                extra={"action": "worker.unsaved", "worker_id": self.id, "count": unsaved},
            )
        return unsaved

    async def _flush_now(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            self._pending_event.clear()
            try:
                applied = await self.store.complete(batch)
            except asyncio.CancelledError:
                # Cut short by a second signal: maybe stored, maybe not; counted as unsaved.
                self._pending = batch + self._pending
                raise
            except Exception as exc:
                log.error(
                    "could not store job outcomes; retrying",
                    extra={
                        "action": "worker.complete_error",
                        "error": str(exc),
                        "count": len(batch),
                    },
                )
                self._pending = batch + self._pending
                if self._killed.is_set() and self._closing:
                    return  # a second signal: leave (_close_flusher counts what is left)
                if self._killed.is_set() or not self._closing:
                    await asyncio.sleep(COMPLETE_RETRY)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._killed.wait(), COMPLETE_RETRY)
                continue
            for outcome, ok in zip(batch, applied, strict=True):
                self._leases.pop(outcome.id, None)
                if not ok:
                    log.warning(
                        "outcome discarded: the lease was lost (another worker owns the job now)",
                        extra={
                            "action": "job.fenced",
                            "job_id": outcome.id,
                            "attempt": outcome.attempt,
                            "worker_id": self.id,
                        },
                    )

    async def _record(self, starting: bool = False) -> None:
        """Write this worker's entry in the store's registry. A failure is logged once until
        a write succeeds again, and never stops the worker: the registry only shows it."""
        registry = self._registry
        if registry is None:
            return
        try:
            if starting:
                self._started_at = await self.store.now()
            info = WorkerInfo(
                self.id,
                self._host,
                os.getpid(),
                tuple(self.queues or ()),
                self.concurrency,
                self._started_at,
                len(self._running),
            )
            await registry.record_worker(info, self.lease)
        except Exception as exc:
            if not self._record_failing:
                self._record_failing = True
                log.warning(
                    "could not record this worker in the store's list of workers; it works "
                    "on, but may be missing from the dashboard until a heartbeat records it",
                    extra={
                        "action": "worker.record_error",
                        "worker_id": self.id,
                        "error": str(exc),
                    },
                )
            return
        self._record_failing = False

    async def _forget(self) -> None:
        """Remove this worker's entry on the way out; after a second signal only briefly
        (an entry left behind lapses one lease later anyway)."""
        registry = self._registry
        if registry is None:
            return
        try:
            async with asyncio.timeout(KILL_FLUSH if self._force else None):
                await registry.forget_worker(self.id)
        except Exception as exc:
            log.warning(
                "could not remove this worker from the store's list of workers; it lapses "
                "there one lease after its last heartbeat",
                extra={"action": "worker.forget_error", "worker_id": self.id, "error": str(exc)},
            )

    async def _heartbeat_loop(self) -> None:
        """Renew every third of the lease, counted from one tick's start to the next, so
        that a slow round trip does not push the next renewal back: a lease that lapses on
        a busy machine makes its jobs run twice."""
        interval = self.lease / 3
        due = time.monotonic()
        while True:
            due = max(due + interval, time.monotonic())
            await asyncio.sleep(due - time.monotonic())
            if self._leases:
                await self._renew()

    async def _registry_loop(self) -> None:
        """The registry entry in a loop of its own: its write never delays a renewal."""
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)
            await self._record()

    async def _renew(self) -> None:
        """Extend the leases of the jobs this worker holds; learn of lost ones and of
        cancellations asked for."""
        try:
            lost, cancel = await self.store.heartbeat(
                list(self._leases.items()), self.id, self.lease
            )
        except Exception as exc:
            log.error(
                "heartbeat failed",
                extra={"action": "worker.heartbeat_error", "error": str(exc)},
            )
            return
        self._stop_cancelled(cancel)
        for job_id in lost:
            if job_id in self._running:
                log.warning(
                    "lease lost for a running job; its outcome will be discarded",
                    extra={"action": "job.lease_lost", "job_id": job_id, "worker_id": self.id},
                )

    def _stop_cancelled(self, ids: set[str]) -> None:
        """Cancel the tasks of running jobs whose cancellation was asked for; a job claimed
        ahead and not started is given back, which ends it cancelled."""
        for job_id in ids:
            running = self._running.get(job_id)
            if running is not None and job_id not in self._cancel_requested:
                self._cancel_requested.add(job_id)
                running.cancel()
        waiting = [r for r in self._ready if r.id in ids]
        for record in waiting:
            self._ready.remove(record)
            self._pending.append(Outcome(record.id, self.id, record.attempt, OutcomeKind.RELEASE))
            self._pending_event.set()
        if waiting:
            self._slot.set()  # room in the buffer: the claim loop may take more

    async def _reaper_loop(self) -> None:
        last_purge = 0.0
        while True:
            await asyncio.sleep(self.reaper_interval)
            try:
                count = await self.store.requeue_expired()
                if count:
                    log.warning(
                        "requeued jobs whose worker stopped renewing leases",
                        extra={"action": "worker.reaped", "count": count},
                    )
                if time.monotonic() - last_purge > PURGE_INTERVAL:
                    last_purge = time.monotonic()
                    cutoff = await self.store.now() - self.app.retention
                    purged = await self.store.purge(cutoff)
                    if purged:
                        log.info(
                            "purged finished jobs past retention",
                            extra={"action": "worker.purged", "count": purged},
                        )
            except Exception as exc:
                log.error(
                    "reaper failed", extra={"action": "worker.reaper_error", "error": str(exc)}
                )

    # --- eager mode ----------------------------------------------------------------------

    async def run_until_idle(self) -> int:
        """Run due jobs in this task until none is left; returns how many ran.

        Used by ``offload.testing.eager``; no background loops, no signals.
        """
        ran = 0
        while True:
            records = await self.store.claim(self._claim(self.concurrency))
            if not records:
                return ran
            for record in records:
                self._leases[record.id] = record.attempt
                outcome = await self._runner.run(record)
                self._counts[outcome.kind] += 1
                self._pending.append(outcome)
                ran += 1
            await self._flush_now()


async def _end(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until they have ended, cancelling again while any lives.

    One cancellation is not always enough: Python 3.11's ``asyncio.wait_for`` returns the
    inner result, and drops the cancellation, when the two arrive in the same loop pass, and
    redis-py sends its commands through it. A loop of the worker's that lost its cancellation
    that way ran on, and the process, waiting for it, never exited. What still lives after
    ``END_TRIES`` is left behind, logged, so that the process can exit."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(END_TRIES):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=END_WAIT)
    if pending:
        log.error(
            "worker loops did not stop when cancelled; leaving them behind",
            extra={"action": "worker.stuck_loops", "count": len(pending)},
        )
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
