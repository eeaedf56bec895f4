"""Header injection, generated: a value either fails validation (naming its field) or
arrives at a real SMTP server without adding a single header or recipient, and with its text
unchanged.

How many examples run, and whether they are random, comes from the Hypothesis profile
(tests/conftest.py): the same fixed set under CI, a random search locally.
"""

from __future__ import annotations

import email.policy
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from offload.email import EmailMessage, Mailer
from offload.email.sink import MailSink

LINE_BREAKS = [
    "\r\n",
    "\n",
    "\r",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
]
FORBIDDEN = set("".join(LINE_BREAKS)) | {chr(c) for c in range(0x20) if c != 0x09} | {"\x7f"}

LOOKALIKES = [
    "Bcc: evil@example.org",
    "To: evil@example.org",
    " ",
    ":",
    "\t",
    "é",
    "\xa0",
    "=?",
    "?=",
]
ENCODED = ["=?utf-8?q?", "=0D=0A", "=?utf-8?q?=0D=0A?=", "=?utf-8?b?DQo=?=", "=?utf-8?q?a?="]
single_line = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=8
)

# Values an attacker would build: about half stay on one line (and must arrive intact),
# the rest carry line breaks, controls or encoded words (and must be refused).
hostile = st.lists(st.sampled_from(LOOKALIKES) | single_line, max_size=5).map("".join) | st.lists(
    st.sampled_from([*LINE_BREAKS, *LOOKALIKES, *ENCODED]) | st.text(max_size=8), max_size=6
).map("".join)

EXPECTED_HEADERS = Counter(
    ["from", "to", "subject", "date", "message-id", "x-note", "mime-version", "content-type"]
)


def _has_forbidden(*values: str) -> bool:
    return any(char in FORBIDDEN for value in values for char in value)


def _decoded(value: str) -> str:
    """The value as a mail reader shows it: RFC 2047 encoded words decoded."""
    return str(email.policy.SMTP.header_factory("X-Check", value))


def _dangerous(*values: str) -> bool:
    """A line break or control character, directly or inside an RFC 2047 encoded word."""
    for value in values:
        if _has_forbidden(value):
            return True
        if "=?" in value:
            try:
                decoded = _decoded(value)
            except Exception:
                return True
            if _has_forbidden(decoded):
                return True
    return False


def _squash(text: str) -> str:
    return " ".join(text.split())


def _readings(value: str) -> set[str]:
    """What a reader may get for a subject or custom header: the value itself (its encoded
    words decoded, if it has any), with or without the leading spaces and tabs (plain text
    after the header's colon loses them; encoded text keeps them)."""
    text = _decoded(value) if "=?" in value else value
    return {text, text.lstrip(" \t")}


# Found by the search below: the stdlib's folding split this subject at the no-break space
# and the reader got "Bcc:evil", one space short (no header was added).
NBSP_SUBJECT = "HelloHelloHelloBcc: evil@example.org\xa0HelloBcc: evil\xa0"


class TestHeaderInjection:
    # One sink serves every generated example (cleared each time); starting a server per
    # example would only slow the test down.
    @settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(subject=hostile, name=hostile, note=hostile, filename=hostile)
    @example(subject=NBSP_SUBJECT, name="", note=NBSP_SUBJECT, filename="")
    async def test_injection_never_reaches_the_server(
        self, sink: MailSink, mailer: Mailer, subject: str, name: str, note: str, filename: str
    ) -> None:
        """Refused with a ValidationError naming the field when a value has a line break or
        control character; otherwise delivered with exactly the expected headers, the one
        intended recipient, and the subject and custom header as sent, to the character."""
        filename = f"f{filename}"
        data = {
            "to": [{"email": "bob@example.com", "name": name}],
            "subject": subject,
            "text": "body",
            "headers": {"X-Note": note},
            "attachments": [{"filename": filename, "content": b"x"}],
        }
        try:
            message = EmailMessage.model_validate(data)
        except ValidationError as exc:
            fields = {str(error["loc"][0]) for error in exc.errors()}
            assert fields <= {"subject", "to", "headers", "attachments"}
            assert _dangerous(subject, name, note, filename)
            event("refused")
            return
        event("sent")
        assert not _dangerous(subject, name, note, filename)

        sink.clear()
        await mailer.send(message)
        [got] = sink.messages
        top_headers = Counter(n.lower() for n, _ in got.headers)
        assert top_headers == EXPECTED_HEADERS
        assert got.recipients == ["bob@example.com"]
        assert got.subject in _readings(subject)
        assert got.header("X-Note") in _readings(note)
        # A reader may or may not decode an encoded word inside a filename (it depends on
        # whether it stands as its own token); either way it is the same single filename.
        [got_name] = [_squash(a.filename or "") for a in got.attachments]
        assert got_name in {_squash(filename), _squash(_decoded(filename))}

    async def test_lookalike_values_stay_inside_their_header(
        self, sink: MailSink, mailer: Mailer
    ) -> None:
        """Single-line values that look like headers or addresses are sent as text."""
        message = EmailMessage.model_validate(
            {
                "to": [{"email": "bob@example.com", "name": "Evil, <evil@example.org>"}],
                "subject": "Hi Bcc: evil@example.org =?utf-8?q?Gr=C3=BC=C3=9Fe?=",
                "text": "body",
                "headers": {"X-Note": "To: evil@example.org"},
            }
        )
        await mailer.send(message)
        [got] = sink.messages
        single_part = EXPECTED_HEADERS + Counter(["content-transfer-encoding"])
        assert Counter(n.lower() for n, _ in got.headers) == single_part
        assert got.recipients == ["bob@example.com"]
        assert got.header("To") == '"Evil, <evil@example.org>" <bob@example.com>'

    def test_encoded_line_break_refused(self) -> None:
        """An RFC 2047 encoded word that decodes to a line break is refused as well, since
        the stdlib may write the decoded text back when it folds the header."""
        for field, value in [
            ("subject", "Hi =?utf-8?q?=0D=0ABcc:_evil@example.org?="),
            ("headers", {"X-Note": "=?utf-8?b?DQpCY2M6IGV2aWxAZXhhbXBsZS5vcmc=?="}),
        ]:
            data = {"to": "bob@example.com", "subject": "Hi", "text": "x", field: value}
            with pytest.raises(ValidationError, match="encoded words") as info:
                EmailMessage.model_validate(data)
            assert [e["loc"][0] for e in info.value.errors()] == [field]

    async def test_no_break_space_arrives_intact(self, sink: MailSink, mailer: Mailer) -> None:
        """A no-break space next to header-like text is text like any other: the subject
        arrives character for character, with no header added."""
        message = EmailMessage(to="bob@example.com", subject=NBSP_SUBJECT, text="body")
        await mailer.send(message)
        [got] = sink.messages
        assert NBSP_SUBJECT == got.subject
        expected = EXPECTED_HEADERS - Counter(["x-note"]) + Counter(["content-transfer-encoding"])
        assert expected == Counter(n.lower() for n, _ in got.headers)
        assert ["bob@example.com"] == got.recipients

    @pytest.mark.parametrize(
        "subject",
        [
            "Grüße\xa0Bcc: evil@example.org und noch ein langer Betreff, der gefaltet wird",
            "a\xa0 b \xa0c\t d" * 12,
            "x" * 200 + " Bcc: evil@example.org",
        ],
    )
    async def test_long_subjects_fold_without_changing_text(
        self, sink: MailSink, mailer: Mailer, subject: str
    ) -> None:
        """Folding a long subject (plain or encoded) keeps every space, tab and no-break
        space where it was, and every wire line within the limits of RFC 5322."""
        await mailer.send(EmailMessage(to="bob@example.com", subject=subject, text="body"))
        [got] = sink.messages
        assert subject == got.subject
        head = got.raw.split(b"\r\n\r\n", 1)[0]
        assert all(len(line) <= 998 for line in head.split(b"\r\n"))
