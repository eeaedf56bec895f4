"""The service's background work: every task and schedule, registered on the app's jobs.

Tasks that touch the service's data take the session and the settings as dependencies, the
way its endpoints do; the worker resolves them for each job and closes the session when the
job ends. Mail goes through ``offload.email``: a permanent refusal fails the job at once, a
server that is down is retried with backoff; without ``OFFLOAD_SMTP_HOST`` a mail is logged
instead of sent, so the service runs with no mail server at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import io
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from examples.notify.chunking import clean_range, merge_parts, plan_chunks
from examples.notify.cleaning import Cancelled, CsvError, clean_csv
from examples.notify.db import Order, PaymentEvent, Stats, Upload, User, get_session
from examples.notify.images import make_thumbnails
from examples.notify.settings import Settings, get_settings
from offload import Depends, Fail, JobContext, JobState, Offload
from offload.email import PERMANENT_ERRORS, Address, Attachment, Templates, send_email
from offload.stores import JobFilter

T = TypeVar("T")
# The jobs whose success is a cleaned file: one job, or the merge of a chunked one.
FILE_TASKS = ("notify.clean_file", "notify.merge_chunks")
TEMPLATES = Path(__file__).parent / "templates" / "email"
MAIL_TASKS = (
    "notify.send_welcome",
    "notify.send_notification",
    "notify.send_order_confirmation",
    "notify.send_receipt",
    "notify.daily_report",
)


@cache
def templates() -> Templates:
    return Templates(TEMPLATES)


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


async def deliver(
    ctx: JobContext,
    template: str,
    to: Address,
    context: dict[str, Any],
    attachments: tuple[Attachment, ...] = (),
) -> dict[str, object]:
    """Render and send one mail; its Message-ID comes from the job, so a retried job sends
    the same message again rather than a second one that a mail client shows twice."""
    message = templates().message(template, to=[to], context=context, attachments=attachments)
    if not os.environ.get("OFFLOAD_SMTP_HOST"):
        ctx.logger.info("no OFFLOAD_SMTP_HOST: %s email to %s logged, not sent", template, to.email)
        return {"sent": False, "to": to.email}
    return await send_email(message, job_id=ctx.job_id)


async def count_jobs(
    jobs: Offload, tasks: Iterable[str], state: JobState, start: datetime, end: datetime
) -> int:
    """Jobs of ``tasks`` in ``state`` enqueued within the window, page by page (the report
    runs once a day; the store answers each page from its indexes)."""
    flt = JobFilter(
        tasks=tuple(tasks),
        states=(state,),
        enqueued_after=start.timestamp(),
        enqueued_before=end.timestamp(),
    )
    total, cursor = 0, None
    while True:
        page = await jobs.store.list(flt, 1000, cursor)
        total += len(page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            return total


async def build_stats(session: AsyncSession) -> dict[str, Any]:
    async def scalar(query: Any) -> int:
        return int((await session.execute(query)).scalar_one() or 0)

    return {
        "users": await scalar(select(func.count()).select_from(User)),
        "orders": await scalar(select(func.count()).select_from(Order)),
        "paid_orders": await scalar(
            select(func.count()).select_from(Order).where(Order.status == "paid")
        ),
        "revenue_cents": await scalar(
            select(func.sum(Order.total_cents)).where(Order.status == "paid")
        ),
        "files": await scalar(select(func.count()).select_from(Upload).where(Upload.kind == "csv")),
        "images": await scalar(
            select(func.count()).select_from(Upload).where(Upload.kind == "image")
        ),
    }


async def in_thread(ctx: JobContext, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a thread with the job's progress and cancel, as the file job runs
    ``clean_csv``: every progress report lands before the job's outcome does, a cancel
    stops the thread at its next check, a file that is not CSV fails the job at once."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    reports: list[concurrent.futures.Future[None]] = []

    def on_progress(fraction: float, message: str) -> None:
        reports.append(asyncio.run_coroutine_threadsafe(ctx.progress(fraction, message), loop))

    try:
        result = await asyncio.to_thread(
            work, *args, on_progress=on_progress, should_stop=stop.is_set
        )
    except asyncio.CancelledError:
        stop.set()
        raise
    except CsvError as exc:
        raise Fail(f"the file cannot be read as CSV: {exc}") from None
    except Cancelled:
        raise asyncio.CancelledError from None
    await asyncio.gather(*(asyncio.wrap_future(report) for report in reports))
    return result


def thumbnails(source: str, out_dir: str) -> dict[str, Any]:
    """Runs in the process pool, which imports this module and finds the function by its
    module-level name: plain arguments in, JSON out."""
    return make_thumbnails(Path(source), Path(out_dir))


def chunks_dir(settings: Settings, upload_id: str) -> Path:
    """Where a chunked file's parts wait for the merge: beside the upload, never among the
    outputs, which show a complete result or nothing."""
    return settings.uploads / upload_id / "chunks"


class Tasks:
    """The tasks, typed: ``tasks.send_welcome.enqueue(email, name)`` is checked by mypy."""

    def __init__(self, jobs: Offload, settings: Settings) -> None:
        @jobs.task(
            name="notify.send_welcome", queue="email", retries=5, give_up_on=PERMANENT_ERRORS
        )
        async def send_welcome(ctx: JobContext, email: str, name: str) -> dict[str, object]:
            # Built before the SMTP check, so a name no header can carry fails the job at its
            # first attempt with the reason, whether or not mail is configured.
            to = Address(email=email, name=name)
            return await deliver(ctx, "welcome", to, {"name": name})

        @jobs.task(
            name="notify.send_notification", queue="email", retries=5, give_up_on=PERMANENT_ERRORS
        )
        async def send_notification(
            ctx: JobContext, to: str, template: str, context: dict[str, Any]
        ) -> dict[str, object]:
            return await deliver(ctx, template, Address(email=to), context)

        @jobs.task(
            name="notify.send_order_confirmation",
            queue="email",
            retries=5,
            give_up_on=PERMANENT_ERRORS,
        )
        async def send_order_confirmation(
            ctx: JobContext, order_id: int, session: AsyncSession = Depends(get_session)
        ) -> dict[str, object]:
            order = await session.get(Order, order_id)
            if order is None:
                raise Fail(f"order {order_id} does not exist (rolled back?)")
            items = [
                {"sku": i.sku, "quantity": i.quantity, "unit_price": money(i.unit_price_cents)}
                for i in order.items
            ]
            context = {"order_id": order.id, "items": items, "total": money(order.total_cents)}
            return await deliver(ctx, "order_confirmation", Address(email=order.email), context)

        @jobs.task(
            name="notify.send_receipt", queue="email", retries=5, give_up_on=PERMANENT_ERRORS
        )
        async def send_receipt(
            ctx: JobContext,
            order_id: int,
            event_id: str,
            session: AsyncSession = Depends(get_session),
        ) -> dict[str, object]:
            order = await session.get(Order, order_id)
            if order is None:
                raise Fail(f"order {order_id} does not exist")
            context = {"order_id": order.id, "amount": money(order.total_cents),
                       "event_id": event_id}  # fmt: skip
            return await deliver(ctx, "receipt", Address(email=order.email), context)

        @jobs.task(name="notify.process_payment", retries=5)
        async def process_payment(
            ctx: JobContext,
            event_id: str,
            order_id: int,
            amount_cents: int,
            session: AsyncSession = Depends(get_session),
        ) -> dict[str, object]:
            """Mark the order paid and queue its receipt, once per provider event: the event
            row and the order's change commit together, and a rerun finds the row."""
            if await session.get(PaymentEvent, event_id) is None:
                order = await session.get(Order, order_id)
                if order is None:
                    raise Fail(f"payment {event_id} names order {order_id}, which does not exist")
                if amount_cents != order.total_cents:
                    raise Fail(
                        f"payment {event_id} of {money(amount_cents)} does not match order "
                        f"{order_id}'s total of {money(order.total_cents)}"
                    )
                order.status, order.paid_at = "paid", datetime.now(UTC)
                session.add(PaymentEvent(event_id=event_id, order_id=order_id))
                await session.commit()
            receipt = await send_receipt.options(key=f"receipt:{event_id}").enqueue(
                order_id, event_id
            )
            return {"order_id": order_id, "paid": True, "receipt_job": receipt.id}

        @jobs.task(name="notify.clean_file", retries=3, timeout=3600)
        async def clean_file(
            ctx: JobContext, upload_id: str, settings: Settings = Depends(get_settings)
        ) -> dict[str, Any]:
            """Clean an uploaded CSV in a thread, reporting progress; a cancel stops the
            thread at its next check. Outputs appear all at once or not at all, so a run
            after a crash either finds them complete or starts again from nothing."""
            out = settings.outputs / upload_id
            done = out / "summary.json"
            if done.exists():  # an earlier attempt published them, then its worker died
                result: dict[str, Any] = json.loads(done.read_text())
                return result
            loop = asyncio.get_running_loop()
            stop = threading.Event()
            reports: list[concurrent.futures.Future[None]] = []

            def on_progress(fraction: float, message: str) -> None:
                # From the cleaning thread onto the loop; kept, so that every report has
                # landed before the job's outcome does.
                reports.append(
                    asyncio.run_coroutine_threadsafe(ctx.progress(fraction, message), loop)
                )

            source = settings.uploads / upload_id / "original.csv"
            try:
                summary = await asyncio.to_thread(
                    clean_csv, source, out, on_progress=on_progress, should_stop=stop.is_set
                )
            except asyncio.CancelledError:
                stop.set()  # the thread stops at its next check and removes its work folder
                raise
            except CsvError as exc:
                raise Fail(f"the file cannot be read as CSV: {exc}") from None
            except Cancelled:  # only after stop was set, that is after a cancel
                raise asyncio.CancelledError from None
            await asyncio.gather(*(asyncio.wrap_future(report) for report in reports))
            return summary.to_json()

        # A CSV over NOTIFY_CHUNK_MB: split_file, then clean_chunk on each range in
        # parallel, then merge_chunks, which publishes what clean_file would (chunking.py).
        @jobs.task(name="notify.split_file", retries=3, timeout=3600)
        async def split_file(
            ctx: JobContext, upload_id: str, count: int, settings: Settings = Depends(get_settings)
        ) -> dict[str, Any]:
            source = settings.uploads / upload_id / "original.csv"
            plan = await in_thread(ctx, plan_chunks, source, count)
            return {"upload_id": upload_id, **plan}

        @jobs.task(name="notify.clean_chunk", retries=3, timeout=3600)
        async def clean_chunk(
            ctx: JobContext,
            plan: dict[str, Any],
            index: int,
            settings: Settings = Depends(get_settings),
        ) -> dict[str, Any]:
            upload_id = plan["upload_id"]
            source = settings.uploads / upload_id / "original.csv"
            work = chunks_dir(settings, upload_id)
            return await in_thread(ctx, clean_range, source, plan, index, work)

        @jobs.task(name="notify.merge_chunks", retries=3, timeout=3600)
        async def merge_chunks(
            ctx: JobContext,
            parts: list[dict[str, Any]],
            upload_id: str,
            settings: Settings = Depends(get_settings),
        ) -> dict[str, Any]:
            out = settings.outputs / upload_id
            work = chunks_dir(settings, upload_id)
            done = out / "summary.json"
            if done.exists():  # published by an earlier attempt, whose worker then died
                shutil.rmtree(work, ignore_errors=True)
                result: dict[str, Any] = json.loads(done.read_text())
                return result
            summary = await in_thread(ctx, merge_parts, parts, work, out)
            return summary.to_json()

        make_thumbs = jobs.task(
            name="notify.make_thumbnails", cpu_bound=True, retries=2, timeout=120
        )(thumbnails)

        @jobs.periodic(every=timedelta(minutes=5), name="refresh-stats")
        @jobs.task(name="notify.refresh_stats", retries=2)
        async def refresh_stats(session: AsyncSession = Depends(get_session)) -> dict[str, Any]:
            body = await build_stats(session)
            row = await session.get(Stats, "summary")
            if row is None:
                session.add(Stats(name="summary", body=body))
            else:
                row.body, row.built_at = body, datetime.now(UTC)
            await session.commit()
            return body

        @jobs.periodic(cron="0 0 * * *", timezone=settings.timezone, name="daily-report")
        @jobs.task(name="notify.daily_report", retries=5, give_up_on=PERMANENT_ERRORS)
        async def daily_report(
            ctx: JobContext,
            session: AsyncSession = Depends(get_session),
            settings: Settings = Depends(get_settings),
        ) -> dict[str, object]:
            """The day that just ended in ``NOTIFY_TIMEZONE``: users, orders, mails sent and
            failed, files processed and job failures, as HTML with a CSV attachment."""
            # The store's clock, which the schedule fired by (a test's Clock moves it).
            now = datetime.fromtimestamp(await jobs.store.now(), settings.zone)
            end = now.replace(hour=0, minute=0, second=0, microsecond=0)
            start = end - timedelta(days=1)
            figures = await report_figures(jobs, session, start, end)
            table = io.StringIO()
            writer = csv.writer(table)
            writer.writerow(["figure", "value"])
            writer.writerows(figures)
            attachment = Attachment(
                filename=f"report-{start.date()}.csv",
                content=table.getvalue().encode(),
                content_type="text/csv",
            )
            context = {"day": str(start.date()), "figures": figures}
            to = Address(email=settings.admin_email)
            return await deliver(ctx, "daily_report", to, context, (attachment,))

        self.send_welcome = send_welcome
        self.send_notification = send_notification
        self.send_order_confirmation = send_order_confirmation
        self.send_receipt = send_receipt
        self.process_payment = process_payment
        self.clean_file = clean_file
        self.split_file = split_file
        self.clean_chunk = clean_chunk
        self.merge_chunks = merge_chunks
        self.make_thumbnails = make_thumbs
        self.refresh_stats = refresh_stats
        self.daily_report = daily_report


async def report_figures(
    jobs: Offload, session: AsyncSession, start: datetime, end: datetime
) -> list[tuple[str, int]]:
    async def rows(table: Any, column: Any) -> int:
        window = column.between(start.astimezone(UTC), end.astimezone(UTC))
        query = select(func.count()).select_from(table).where(window)
        return int((await session.execute(query)).scalar_one())

    async def jobs_in(state: JobState, tasks: Iterable[str]) -> int:
        return await count_jobs(jobs, tasks, state, start, end)

    return [
        ("new users", await rows(User, User.created_at)),
        ("orders", await rows(Order, Order.created_at)),
        ("orders paid", await rows(Order, Order.paid_at)),
        ("files uploaded", await rows(Upload, Upload.created_at)),
        ("mails sent", await jobs_in(JobState.SUCCEEDED, MAIL_TASKS)),
        ("mails failed", await jobs_in(JobState.FAILED, MAIL_TASKS)),
        ("files processed", await jobs_in(JobState.SUCCEEDED, FILE_TASKS)),
        ("job failures", await jobs_in(JobState.FAILED, sorted(jobs.tasks))),
    ]
