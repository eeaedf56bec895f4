"""Jinja2 email templates: one name, up to three files.

For a template called ``welcome`` the folder holds:

- ``welcome.subject.txt`` (required): the subject line; whitespace, newlines included, is
  collapsed to single spaces, so the file may end with a newline;
- ``welcome.html`` (autoescaped) and/or ``welcome.txt`` (plain text): the bodies. With only
  the HTML body, the text body is derived from it.

Every variable a template uses must be passed (``StrictUndefined``): a typo fails at render
time instead of mailing a blank.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import jinja2

from offload.email.errors import TemplateError
from offload.email.html_text import html_to_text
from offload.email.message import Address, Attachment, EmailMessage

__all__ = ["RenderedEmail", "Templates"]


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
        return RenderedEmail(subject=" ".join(subject.split()), text=text, html=html)

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
        """Render ``name`` and build the message to send."""
        rendered = self.render(name, **dict(context or {}))
        recipients = [to] if isinstance(to, str | Address) else list(to)
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
