"""Email for offload jobs: validated messages, Jinja2 templates and an SMTP client whose
failures say whether a retry can help.

The development sink lives in :mod:`offload.email.sink` and failure-scripting helpers for
tests in :mod:`offload.email.testing`; they are not imported here, so sending mail does not
load the SMTP server code.
"""

from offload.email.errors import (
    PERMANENT_ERRORS,
    AttachmentTooLarge,
    EmailError,
    InvalidMessage,
    PermanentEmailError,
    Refusal,
    TemplateError,
    TransientEmailError,
)
from offload.email.html_text import html_to_text
from offload.email.mailer import Mailer, SendResult
from offload.email.message import (
    DEFAULT_MAX_ATTACHMENT_BYTES,
    Address,
    Attachment,
    EmailMessage,
    HeaderText,
    check_header_value,
)
from offload.email.message_id import make_message_id, random_message_id
from offload.email.register import TaskRegistry, register
from offload.email.settings import MailSettings
from offload.email.task import send_email, send_template
from offload.email.templates import RenderedEmail, Templates

__all__ = [
    "DEFAULT_MAX_ATTACHMENT_BYTES",
    "PERMANENT_ERRORS",
    "Address",
    "Attachment",
    "AttachmentTooLarge",
    "EmailError",
    "EmailMessage",
    "HeaderText",
    "InvalidMessage",
    "MailSettings",
    "Mailer",
    "PermanentEmailError",
    "Refusal",
    "RenderedEmail",
    "SendResult",
    "TaskRegistry",
    "TemplateError",
    "Templates",
    "TransientEmailError",
    "check_header_value",
    "html_to_text",
    "make_message_id",
    "random_message_id",
    "register",
    "send_email",
    "send_template",
]
