"""Jinja2 email templates: one name, up to three files.

For a template called ``welcome`` the folder holds:

- ``welcome.subject.txt`` (required): the subject line; runs of spaces, tabs and line ends
  (CR, LF) are collapsed to single spaces, so the file may end with a newline. Other
  characters stay as they are: a no-break space is kept, and a control character or Unicode
  line separator coming from the context makes the message invalid;
- ``welcome.html`` (autoescaped) and/or ``welcome.txt`` (plain text): the bodies. With only
  the HTML body, the text body is derived from it.

Every variable a template uses must be passed (``StrictUndefined``): a typo fails at render
time instead of mailing a blank.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import jinja2
from pydantic import ValidationError

from offload.email.errors import InvalidMessage, TemplateError
from offload.email.html_text import html_to_text
from offload.email.message import Address, Attachment, EmailMessage

__all__ = ["RenderedEmail", "Templates"]

# Only ASCII whitespace: str.split() would also turn a no-break space into a plain one and
# hide a U+2028 from the context instead of refusing it.
_SUBJECT_SPACE = re.compile(r"[ \t\r\n]+")


@dataclass(frozen=True)
class RenderedEmail:
    """The rendered subject and bodies of one template."""

    subject: str
    text: str
    html: str | None


class Templates:
    """Renders the email templates in ``folder`` (or several folders, searched in order)."""

    def __init__(
        self,
        folder: str | PathLike[str] | Sequence[str | PathLike[str]],
        *,
        environment: jinja2.Environment | None = None,
    ) -> None:
        if environment is None:
            environment = jinja2.Environment(
                loader=jinja2.FileSystemLoader(folder),
                autoescape=jinja2.select_autoescape(
                    enabled_extensions=("html", "htm", "xml"), default_for_string=False
                ),
                undefined=jinja2.StrictUndefined,
                # Keep template newlines as written; the text part is what readers see.
                keep_trailing_newline=True,
            )
        self.environment = environment

    def render(self, name: str, /, **context: Any) -> RenderedEmail:
        """Render template ``name`` with ``context``; raise :class:`TemplateError` naming the
        file and the problem (missing file, missing variable, syntax error)."""
        subject = self._render(f"{name}.subject.txt", context, required=True)
        assert subject is not None  # required=True
        text = self._render(f"{name}.txt", context, required=False)
        html = self._render(f"{name}.html", context, required=False)
        if text is None and html is None:
            raise TemplateError(
                f"email template {name!r} has no body: add {name}.txt or {name}.html"
            )
        if text is None:
            assert html is not None
            text = html_to_text(html)
        words = _SUBJECT_SPACE.split(subject)
        return RenderedEmail(subject=" ".join(w for w in words if w), text=text, html=html)

    def message(
        self,
        name: str,
        /,
        *,
        to: Address | str | Iterable[Address | str],
        context: Mapping[str, Any] | None = None,
        sender: Address | str | None = None,
        cc: Iterable[Address | str] = (),
        bcc: Iterable[Address | str] = (),
        reply_to: Iterable[Address | str] = (),
        attachments: Iterable[Attachment] = (),
        headers: Mapping[str, str] | None = None,
    ) -> EmailMessage:
        """Render ``name`` and build the message to send.

        Raise :class:`InvalidMessage` when the result does not validate (say, a context value
        with a line break in the subject): on a worker that is a permanent failure, since
        rendering the same template with the same context gives the same message.
        """
        rendered = self.render(name, **dict(context or {}))
        recipients = [to] if isinstance(to, str | Address) else list(to)
        try:
            return EmailMessage.model_validate(
                {
                    "to": recipients,
                    "sender": sender,
                    "cc": list(cc),
                    "bcc": list(bcc),
                    "reply_to": list(reply_to),
                    "subject": rendered.subject,
                    "text": rendered.text,
                    "html": rendered.html,
                    "attachments": list(attachments),
                    "headers": dict(headers or {}),
                }
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'message'}: {error['msg']}"
                for error in exc.errors()
            )
            raise InvalidMessage(
                f"email template {name!r} gives an invalid message: {problems}"
            ) from None

    def _render(self, filename: str, context: Mapping[str, Any], *, required: bool) -> str | None:
        try:
            template = self.environment.get_template(filename)
        except jinja2.TemplateNotFound:
            if required:
                raise TemplateError(
                    f"email template file {filename!r} not found in {self._where()}"
                ) from None
            return None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"email template {filename!r} line {exc.lineno}: {exc.message}"
            ) from exc
        try:
            return template.render(context)
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"email template {filename!r}: {exc.message}; pass it in the context"
            ) from exc

    def _where(self) -> str:
        loader = self.environment.loader
        if isinstance(loader, jinja2.FileSystemLoader):
            return ", ".join(str(p) for p in loader.searchpath)
        return repr(loader)
