"""Register the email tasks on an app in one line::

    send_email, send_template = offload.email.register(jobs)

The job core sits above ``offload.email`` (DESIGN §2), so this module never imports the app,
the task registry or the worker: ``jobs`` is anything with a ``task(...)`` decorator method
(:class:`TaskRegistry`). The one core name it needs is ``JobContext``, from the bottom-layer
job model, and that is imported inside :func:`register` so that ``import offload.email``
stays free of the job core.

No ``from __future__ import annotations`` here, on purpose: the core finds a task's context
parameter by resolving its annotation against the module's globals, and ``JobContext`` is
not one of them. Annotations evaluated at definition time hold the class itself.
"""

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from offload.email.errors import PERMANENT_ERRORS
from offload.email.mailer import Mailer
from offload.email.message import EmailMessage
from offload.email.settings import MailSettings
from offload.email.task import send_email as _send_email
from offload.email.task import send_template as _send_template
from offload.email.templates import Templates

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_QUEUE",
    "DEFAULT_RETRIES",
    "SEND_EMAIL",
    "SEND_TEMPLATE",
    "SMTP_BUCKET",
    "TaskRegistry",
    "register",
]

SEND_EMAIL = "offload.send_email"
SEND_TEMPLATE = "offload.send_template"
# The rate limit's bucket, shared by both mail tasks: the server counts mails, not tasks.
SMTP_BUCKET = "offload.smtp"
DEFAULT_QUEUE = "email"
DEFAULT_RETRIES = 5
# Greylisting servers answer 451 for the first few minutes; waits of 30 s, 1, 2, 4 and 8 min
# (each shortened by up to half by jitter) outlast that and a typical server restart.
DEFAULT_BACKOFF = 30.0

T_co = TypeVar("T_co", covariant=True)


class TaskRegistry(Protocol[T_co]):
    """What :func:`register` needs from the app: ``Offload.task`` used with options.

    ``T_co`` is what the decorator returns (the core's task type), so callers keep their
    typed ``enqueue`` without this module naming the core's classes.
    """

    def task(
        self,
        *,
        name: str | None = ...,
        queue: str | None = ...,
        retries: int = ...,
        backoff: float | timedelta | None = ...,
        give_up_on: tuple[type[BaseException], ...] | None = ...,
        rate_limit: str | None = ...,
        rate_limit_key: Any = ...,
    ) -> Callable[[Callable[..., Any]], T_co]: ...


class _Lazy:
    """The mailer and templates, built from ``OFFLOAD_SMTP_*`` at the first send.

    Registering runs at import time in the web process too, which may have no SMTP settings
    at all; reading them only when a worker sends mail keeps that process independent of them.
    """

    def __init__(self, mailer: Mailer | None, templates: Templates | None) -> None:
        self._mailer = mailer
        self._templates = templates

    def mailer(self) -> Mailer:
        if self._mailer is None:
            self._mailer = Mailer.from_settings()
        return self._mailer

    def templates(self) -> Templates:
        if self._templates is None:
            self._templates = Templates(MailSettings().templates)
        return self._templates


def register(
    jobs: TaskRegistry[T_co],
    *,
    mailer: Mailer | None = None,
    templates: Templates | None = None,
    queue: str = DEFAULT_QUEUE,
    retries: int = DEFAULT_RETRIES,
    backoff: float | timedelta = DEFAULT_BACKOFF,
    rate_limit: str | None = None,
) -> tuple[T_co, T_co]:
    """Register ``offload.send_email`` and ``offload.send_template`` on ``jobs``; return both
    tasks.

    ``send_email.enqueue(message)`` takes an :class:`EmailMessage`;
    ``send_template.enqueue(template, to, context, sender=, cc=, bcc=, reply_to=, headers=)``
    takes plain JSON, rendered on the worker. Each attempt sends the Message-ID derived from
    the job id, so a retry after a lost reply can be recognised as the same mail.

    A :class:`TransientEmailError` (connection trouble, 4xx) is retried up to ``retries``
    times with exponential ``backoff`` (seconds before the first retry). A
    :class:`PermanentEmailError` (5xx, or :class:`InvalidMessage`: a rendered message that
    does not validate), a :class:`TemplateError` or a ``ConfigError`` (say, no sender) fails
    the job at once, with the reason (the server's code and reply) in the job's error:
    repeating the same message to the same server cannot change the answer
    (:data:`PERMANENT_ERRORS`).

    ``mailer`` and ``templates`` default to ``OFFLOAD_SMTP_*``, read at the first send.

    ``rate_limit`` (default ``OFFLOAD_SMTP_RATE_LIMIT``, read now: a task's limits are part
    of its declaration), e.g. ``"10/s"``, is the server's limit for both tasks together, one
    bucket that the job store keeps for every worker (``SMTP_BUCKET``).
    """
    # Imported here, not at module level: see the module docstring.
    from offload.jobs import JobContext

    lazy = _Lazy(mailer, templates)
    give_up_on = PERMANENT_ERRORS

    async def send_email(ctx: JobContext, message: EmailMessage) -> dict[str, object]:
        """Send ``message``; the result is the server's answer (``SendResult.as_dict()``)."""
        return await _send_email(message, job_id=ctx.job_id, mailer=lazy.mailer())

    async def send_template(
        ctx: JobContext,
        template: str,
        to: str | list[str],
        context: dict[str, Any] | None = None,
        *,
        sender: str | None = None,
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        reply_to: Sequence[str] = (),
        headers: dict[str, str] | None = None,
    ) -> dict[str, object]:
        """Render ``template`` on the worker and send it (the template's files must be there,
        not only in the process that enqueues)."""
        return await _send_template(
            template,
            to,
            context,
            sender=sender,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            headers=headers,
            job_id=ctx.job_id,
            mailer=lazy.mailer(),
            templates=lazy.templates(),
        )

    if rate_limit is None:
        rate_limit = os.environ.get("OFFLOAD_SMTP_RATE_LIMIT") or None
    limits: dict[str, Any] = (
        {} if rate_limit is None else {"rate_limit": rate_limit, "rate_limit_key": SMTP_BUCKET}
    )
    tasks = [
        jobs.task(
            name=name,
            queue=queue,
            retries=retries,
            backoff=backoff,
            give_up_on=give_up_on,
            **limits,
        )(fn)
        for name, fn in ((SEND_EMAIL, send_email), (SEND_TEMPLATE, send_template))
    ]
    return tasks[0], tasks[1]
