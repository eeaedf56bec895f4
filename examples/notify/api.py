"""The service's JSON routes: users, notifications, orders, payment callbacks, stats."""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from pydantic import BaseModel, EmailStr, Field, ValidationError, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from examples.notify.db import Order, OrderItem, SessionDep, Stats, User, same_postgres
from examples.notify.service import JOB_RESPONSES, READ_RESPONSES, Service, invalid
from examples.notify.tasks import templates
from offload.email import HeaderText, TemplateError
from offload.fastapi import Background, Detail
from offload.stores import JobFilter

MAX_RECIPIENTS = 500
SIGNATURE_HEADER = "X-Notify-Signature"


class Registration(BaseModel):
    email: EmailStr
    # The check the email layer applies to the display name and subject: a name the welcome
    # email could never carry (a line break, a control character) is a 422 naming the field.
    name: HeaderText = Field(min_length=1, max_length=100)


class Accepted(BaseModel):
    job_id: str
    status_url: str = Field(description="GET it (with the API token) to follow the job")


class AlreadyRegistered(BaseModel):
    detail: str
    job_id: str | None = Field(description="the welcome job of the first registration")


class Notification(BaseModel):
    to: list[EmailStr] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    template: Literal["announcement", "welcome"] | None = None
    context: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=50)
    subject: HeaderText | None = Field(default=None, min_length=1, max_length=200)
    text: str | None = Field(default=None, min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _one_form(self) -> Notification:
        if self.template is None and (self.subject is None or self.text is None):
            raise ValueError("give either a template (with its context) or a subject and a text")
        if self.template is not None and (self.subject is not None or self.text is not None):
            raise ValueError("give either a template or a subject and a text, not both")
        return self


class NotificationsAccepted(BaseModel):
    job_ids: list[str]
    recipients: list[str]


class Item(BaseModel):
    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    quantity: int = Field(ge=1, le=10_000)
    unit_price: Decimal = Field(ge=0, le=1_000_000, decimal_places=2)


class NewOrder(BaseModel):
    email: EmailStr
    items: list[Item] = Field(min_length=1, max_length=100)


class OrderAccepted(BaseModel):
    order_id: int
    total: Decimal
    job_id: str
    same_transaction: bool = Field(description="order and job committed as one transaction")


class PaymentEventIn(BaseModel):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    type: Literal["payment.succeeded"]
    order_id: int = Field(ge=1)
    amount: Decimal = Field(ge=0, decimal_places=2)


class StatsOut(BaseModel):
    stats: dict[str, Any] | None
    built_at: str | None
    refresh_job: str | None = None


def cents(amount: Decimal) -> int:
    return int(amount * 100)


def api_router(service: Service) -> APIRouter:
    router = APIRouter()
    guard = [Depends(service.require_token())]
    tasks = service.tasks

    @router.post(
        "/register",
        status_code=status.HTTP_202_ACCEPTED,
        responses={
            409: {"model": AlreadyRegistered, "description": "that email is registered"},
            **{k: v for k, v in JOB_RESPONSES.items() if k != 401},
        },
    )
    async def register(
        user: Registration, background: Background, request: Request, session: SessionDep
    ) -> Any:
        email = user.email.lower()
        key = f"welcome:{email}"
        known = await session.scalar(select(User.id).where(User.email == email))
        # The read ends here, so the connection is free for others while the job is stored.
        await session.rollback()
        if known is not None:
            return already_registered(await welcome_job(key))
        # The job first (its key makes a repeat return the same job), then the user: a
        # user is never stored without the welcome job that the 202 promises.
        job = await background.add_task(tasks.send_welcome.options(key=key), email, user.name)
        session.add(User(email=email, name=user.name))
        try:
            await session.commit()
        except IntegrityError:  # registered by a concurrent request a moment ago
            return already_registered(job.id)
        status_url = request.app.url_path_for("offload_get_job", job_id=job.id)
        return Accepted(job_id=job.id, status_url=str(status_url))

    async def welcome_job(key: str) -> str | None:
        flt = JobFilter(tasks=(tasks.send_welcome.name,), key=key)
        page = await service.jobs.store.list(flt, 1)
        return page.jobs[0].id if page.jobs else None

    def already_registered(job_id: str | None) -> Any:
        from fastapi.responses import JSONResponse

        body = AlreadyRegistered(detail="this email is already registered", job_id=job_id)
        return JSONResponse(body.model_dump(), status_code=status.HTTP_409_CONFLICT)

    @router.post(
        "/send-notification",
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=guard,
        responses=JOB_RESPONSES,
    )
    async def send_notification(
        note: Notification,
        idempotency_key: Annotated[
            str | None, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
        ] = None,
    ) -> NotificationsAccepted:
        """One job per recipient. With an ``Idempotency-Key``, a retried request returns the
        same jobs and sends nothing twice."""
        template: str = note.template or "message"
        context: dict[str, Any] = dict(note.context)
        if note.template is None:
            context = {"subject": note.subject, "text": note.text}
        try:  # render once now: a missing variable is the client's 422, not a failed job
            templates().render(template, **context)
        except TemplateError as exc:
            raise invalid("context", str(exc)) from None
        recipients = list(dict.fromkeys(str(address).lower() for address in note.to))
        prepared = []
        for address in recipients:
            call = tasks.send_notification
            if idempotency_key is not None:
                call = call.options(key=f"{idempotency_key}:{address}")
            prepared.append(call.prepare(address, template, context))
        jobs = await service.enqueue(prepared)
        return NotificationsAccepted(job_ids=[j.id for j in jobs], recipients=recipients)

    @router.post(
        "/orders",
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=guard,
        responses=JOB_RESPONSES,
    )
    async def create_order(new: NewOrder, session: SessionDep) -> OrderAccepted:
        total = sum(cents(i.unit_price) * i.quantity for i in new.items)
        order = Order(email=new.email.lower(), total_cents=total)
        order.items = [
            OrderItem(sku=i.sku, quantity=i.quantity, unit_price_cents=cents(i.unit_price))
            for i in new.items
        ]
        session.add(order)
        await session.flush()  # the order's id, inside the open transaction
        confirm = tasks.send_order_confirmation.options(key=f"order-confirmation:{order.id}")
        together = same_postgres(service.settings.store_url, service.settings.db_url)
        if together:
            # One transaction: a rollback leaves neither the order nor its email.
            [job] = await service.enqueue_in(session, [confirm.prepare(order.id)])
            await session.commit()
        else:
            # Two stores: the order commits first, so the job never names a missing order.
            await session.commit()
            [job] = await service.enqueue([confirm.prepare(order.id)])
        return OrderAccepted(
            order_id=order.id, total=Decimal(total) / 100, job_id=job.id, same_transaction=together
        )

    @router.post(
        "/webhooks/payments",
        status_code=status.HTTP_202_ACCEPTED,
        responses={
            401: {"model": Detail, "description": "the signature is missing or wrong"},
            422: {"model": Detail, "description": "the event is not one this service takes"},
            **{k: v for k, v in JOB_RESPONSES.items() if k != 401},
        },
    )
    async def payment_callback(request: Request) -> Accepted:
        """A payment provider's event, signed ``sha256=<hex HMAC of the body>`` in
        ``X-Notify-Signature``. The event id is the job's idempotency key: a redelivered
        event returns the same job and is processed once."""
        body = await request.body()
        secret = service.settings.webhook_secret.get_secret_value().encode()
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail=f"the {SIGNATURE_HEADER} header is missing or does not match the body",
            )
        try:
            event = PaymentEventIn.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            errors = exc.errors() if isinstance(exc, ValidationError) else []
            raise invalid(
                str(errors[0]["loc"][0]) if errors else "body",
                errors[0]["msg"] if errors else "the body is not JSON",
            ) from None
        call = tasks.process_payment.options(key=f"payment:{event.id}")
        [job] = await service.enqueue([call.prepare(event.id, event.order_id, cents(event.amount))])
        status_url = request.app.url_path_for("offload_get_job", job_id=job.id)
        return Accepted(job_id=job.id, status_url=str(status_url))

    @router.get("/stats", dependencies=guard, responses=READ_RESPONSES)
    async def stats(session: SessionDep) -> StatsOut:
        """The summary the cache-refresh job rebuilds every 5 minutes; before its first run,
        a refresh is queued and its job id given."""
        row = await session.get(Stats, "summary")
        if row is None:
            [job] = await service.enqueue([tasks.refresh_stats.prepare()])
            return StatsOut(stats=None, built_at=None, refresh_job=job.id)
        return StatsOut(stats=row.body, built_at=row.built_at.isoformat())

    return router
