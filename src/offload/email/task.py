"""Core-independent task functions for sending mail from a job.

:func:`offload.email.register` registers them on an app, passing the job id so that every
attempt sends the same Message-ID. A :class:`TransientEmailError` is left to the job's retry
policy; a :class:`PermanentEmailError` (or :class:`TemplateError`) will not get better on
retry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from offload.email.mailer import Mailer
from offload.email.message import Address, EmailMessage
from offload.email.message_id import make_message_id
from offload.email.settings import MailSettings
from offload.email.templates import Templates
from offload.errors import ConfigError

__all__ = ["send_email", "send_template"]


async def send_email(
    message: EmailMessage,
    *,
    job_id: str | None = None,
    mailer: Mailer | None = None,
) -> dict[str, object]:
    """Send ``message`` and return the :class:`SendResult` as JSON (the job's result).

    With ``job_id`` the Message-ID is derived from it, so every attempt of the job sends the
    same Message-ID. Without ``mailer`` one is built from ``OFFLOAD_SMTP_*``.
    """
    mailer = mailer if mailer is not None else Mailer.from_settings()
    message_id = None
    if job_id is not None:
        sender = message.sender or mailer.sender
        if sender is None:
            raise ConfigError(
                "the message has no sender; set EmailMessage.sender or OFFLOAD_SMTP_SENDER"
            )
        message_id = make_message_id(job_id, sender.domain)
    result = await mailer.send(message, message_id=message_id)
    return result.as_dict()


async def send_template(
    template: str,
    to: str | Sequence[str],
    context: Mapping[str, Any] | None = None,
    *,
    sender: str | None = None,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    job_id: str | None = None,
    mailer: Mailer | None = None,
    templates: Templates | None = None,
) -> dict[str, object]:
    """Render ``template`` with ``context`` and send it (see :func:`send_email`).

    The arguments are plain JSON so the job stores them as they are; templates come from
    ``OFFLOAD_SMTP_TEMPLATES`` unless ``templates`` is given.
    """
    if templates is None:
        templates = Templates(MailSettings().templates)
    recipients: list[Address | str] = [to] if isinstance(to, str) else list(to)
    message = templates.message(
        template,
        to=recipients,
        context=context,
        sender=sender,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        headers=headers,
    )
    return await send_email(message, job_id=job_id, mailer=mailer)
