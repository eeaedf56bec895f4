"""EmailMessage: addresses, header safety, attachments and the JSON round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from offload.email import (
    Address,
    Attachment,
    EmailMessage,
    HeaderText,
    check_header_value,
    make_message_id,
    random_message_id,
)

# Every character the issue found let through a web form into a job that could never send.
UNSENDABLE = {
    "U+2028": "Ada\u2028Bcc: evil@example.org",
    "U+0085": "Ada\x85Bcc: evil@example.org",
    "NUL": "Ada\x00",
    "VT": "Ada\x0bBcc: evil@example.org",
    "FF": "Ada\x0cBcc: evil@example.org",
    "CR LF": "Ada\r\nBcc: evil@example.org",
    "encoded CR LF": "Ada =?utf-8?q?=0D=0ABcc:_evil@example.org?=",
    "lone surrogate": "Ada\udc80",
}


def _message(**fields: object) -> EmailMessage:
    base: dict[str, object] = {"to": ["bob@example.com"], "subject": "Hi", "text": "Hello"}
    return EmailMessage.model_validate({**base, **fields})


def _error_locs(exc: ValidationError) -> list[tuple[int | str, ...]]:
    return [tuple(e["loc"]) for e in exc.errors()]


class Form(BaseModel):
    name: HeaderText


class TestHeaderText:
    @pytest.mark.parametrize("value", UNSENDABLE.values(), ids=UNSENDABLE.keys())
    def test_check_refuses_what_no_header_can_carry(self, value: str) -> None:
        """The one check behind every header field refuses line breaks, controls, encoded
        line breaks and text UTF-8 cannot encode, with a ValueError saying which."""
        with pytest.raises(ValueError, match="header values must"):
            check_header_value(value)

    @pytest.mark.parametrize("value", UNSENDABLE.values(), ids=UNSENDABLE.keys())
    def test_annotated_type_names_the_field(self, value: str) -> None:
        """In a request model the same check is a ValidationError naming the field, which
        FastAPI answers with a 422."""
        with pytest.raises(ValidationError) as info:
            Form(name=value)
        assert [("name",)] == _error_locs(info.value)

    @pytest.mark.parametrize("value", UNSENDABLE.values(), ids=UNSENDABLE.keys())
    def test_message_refuses_the_same_values(self, value: str) -> None:
        """An EmailMessage refuses exactly what HeaderText refuses, in the display name and
        the subject alike."""
        with pytest.raises(ValidationError) as info:
            _message(to=[{"email": "bob@example.com", "name": value}], subject=value)
        assert {("to", 0, "name"), ("subject",)} == set(_error_locs(info.value))

    @pytest.mark.parametrize("value", ["Ada Lovelace", "Zoë\xa0Ünal", "tab\there", "=?x"])
    def test_single_line_text_passes_unchanged(self, value: str) -> None:
        """Text that stays on one line, no-break spaces and tabs included, passes as it is."""
        assert (value, value) == (check_header_value(value), Form(name=value).name)


class TestAddress:
    def test_parses_display_name_form(self) -> None:
        """'Name <addr>' splits into the name and the address."""
        assert Address(email="zoe@example.com", name="Zoë Ünal") == Address.model_validate(
            "Zoë Ünal <zoe@example.com>"
        )

    def test_quoted_display_name(self) -> None:
        """A quoted display name may hold commas and quotes."""
        assert Address.model_validate('"Doe, \\"J\\"" <j@example.com>').name == 'Doe, "J"'

    def test_international_address_is_normalised(self) -> None:
        """Internationalised addresses validate; the domain is lowercased."""
        assert Address.model_validate("josé@EXÄMPLE.com").email == "josé@exämple.com"

    @pytest.mark.parametrize("bad", ["not-an-address", "a@b", "x@@example.com", ""])
    def test_invalid_address_refused(self, bad: str) -> None:
        """An invalid address raises a ValidationError."""
        with pytest.raises(ValidationError):
            Address.model_validate(bad)

    def test_str_quotes_the_name(self) -> None:
        """str() gives a form that parses back to the same address."""
        address = Address(email="a@example.com", name='Doe, "J"')
        assert address == Address.model_validate(str(address))


class TestEmailMessage:
    def test_single_recipient_may_be_a_string(self) -> None:
        """to='addr' is accepted as a one-element list."""
        assert [Address(email="bob@example.com")] == _message(to="bob@example.com").to

    def test_needs_a_body(self) -> None:
        """A message without text and html is refused."""
        with pytest.raises(ValidationError, match="text part, an html part"):
            _message(text=None)

    def test_needs_a_recipient(self) -> None:
        """A message without any recipient is refused."""
        with pytest.raises(ValidationError, match="at least one recipient"):
            _message(to=[])

    @pytest.mark.parametrize("breaker", ["\r", "\n", "\r\n", "\x0b", "\x0c", "\x85", "\u2028"])
    def test_line_break_in_subject_refused(self, breaker: str) -> None:
        """Any line break in the subject raises a ValidationError naming the field."""
        with pytest.raises(ValidationError) as info:
            _message(subject=f"Hi{breaker}Bcc: evil@example.com")
        assert _error_locs(info.value) == [("subject",)]

    def test_line_break_in_display_name_refused(self) -> None:
        """A line break in a display name is refused, naming the recipient."""
        with pytest.raises(ValidationError) as info:
            _message(to=[{"email": "bob@example.com", "name": "Bob\nBcc: evil@example.com"}])
        assert _error_locs(info.value) == [("to", 0, "name")]

    def test_line_break_in_extra_header_refused(self) -> None:
        """Extra header values must be single lines."""
        with pytest.raises(ValidationError) as info:
            _message(headers={"X-Campaign": "a\r\nBcc: evil@example.com"})
        assert _error_locs(info.value) == [("headers",)]

    @pytest.mark.parametrize("name", ["X Bad", "X:Bad", "Bcc", "to", "Message-ID", "Resent-To"])
    def test_bad_or_reserved_header_names_refused(self, name: str) -> None:
        """Header names must be valid and must not replace headers built from fields."""
        with pytest.raises(ValidationError):
            _message(headers={name: "x"})

    def test_recipients_are_deduplicated(self) -> None:
        """The envelope lists each address once, to then cc then bcc."""
        message = _message(
            to=["a@example.com", "b@example.com"], cc="a@example.com", bcc="c@example.com"
        )
        assert message.recipients == ["a@example.com", "b@example.com", "c@example.com"]


class TestAttachment:
    def test_content_type_guessed_from_filename(self) -> None:
        """Without a content type, the filename decides."""
        assert Attachment(filename="r.pdf", content=b"%PDF").content_type == "application/pdf"

    def test_unknown_extension_is_octet_stream(self) -> None:
        """Unknown extensions fall back to application/octet-stream."""
        assert Attachment(filename="x.zzz9", content=b"").content_type == "application/octet-stream"

    def test_needs_exactly_one_source(self) -> None:
        """Content and path are mutually exclusive, and one is required."""
        with pytest.raises(ValidationError, match="either content"):
            Attachment(filename="a.txt")
        with pytest.raises(ValidationError, match="either content"):
            Attachment(filename="a.txt", content=b"x", path=Path("a.txt"))

    def test_line_break_in_filename_refused(self) -> None:
        """Filenames go into a header, so line breaks are refused."""
        with pytest.raises(ValidationError) as info:
            _message(attachments=[{"filename": "a\n.txt", "content": b"x"}])
        assert _error_locs(info.value) == [("attachments", 0, "filename")]

    def test_size_limit_default_and_configurable(self) -> None:
        """An attachment over the limit is refused with the size and the limit in the error;
        the limit comes from the validation context."""
        data = {"filename": "big.bin", "content": b"x" * 101}
        with pytest.raises(ValidationError, match="101 bytes, over the limit of 100 bytes"):
            Attachment.model_validate(data, context={"max_attachment_bytes": 100})
        assert len(Attachment.model_validate(data).read()) == 101

    def test_bad_content_type_refused(self) -> None:
        """The content type must be type/subtype."""
        with pytest.raises(ValidationError, match="content_type"):
            Attachment(filename="a", content=b"", content_type="text/plain\r\nX: y")

    def test_path_attachment_read_at_send_time(self, tmp_path: Path) -> None:
        """A path attachment is read when needed, with the limit checked again."""
        from offload.email import AttachmentTooLarge

        path = tmp_path / "report.csv"
        path.write_bytes(b"a,b\n1,2\n")
        attachment = Attachment(filename="report.csv", path=path)
        assert attachment.read() == b"a,b\n1,2\n"
        with pytest.raises(AttachmentTooLarge):
            attachment.read(limit=3)


class TestJsonRoundTrip:
    def test_full_message_round_trips(self, tmp_path: Path) -> None:
        """model_dump(mode='json') then model_validate gives an equal message; bytes travel
        as base64."""
        message = _message(
            sender="Zoë <zoe@example.com>",
            to=["Bob <bob@example.com>", "josé@exämple.com"],
            cc=["c@example.com"],
            bcc=["d@example.com"],
            reply_to="help@example.com",
            html="<p>Hello</p>",
            attachments=[
                {"filename": "a.bin", "content": bytes(range(256))},
                {"filename": "b.txt", "path": tmp_path / "b.txt"},
            ],
            headers={"X-Campaign": "spring"},
        )
        data = message.model_dump(mode="json")
        assert isinstance(data["attachments"][0]["content"], str)
        assert message == EmailMessage.model_validate(data)
        assert message == EmailMessage.model_validate_json(message.model_dump_json())

    def test_text_attachment_content_must_be_base64(self) -> None:
        """Text given as content is read as base64, and anything else is refused."""
        assert Attachment.model_validate({"filename": "a", "content": "YWJj"}).content == b"abc"
        with pytest.raises(ValidationError, match="base64"):
            Attachment.model_validate({"filename": "a", "content": "not base64!"})


class TestMessageId:
    def test_same_job_same_id(self) -> None:
        """The Message-ID is a pure function of job id and domain."""
        assert make_message_id("01J9Z", "example.com") == make_message_id("01J9Z", "example.com")

    def test_readable_for_simple_ids(self) -> None:
        """Simple job ids appear as they are."""
        assert make_message_id("01J9Z", "Example.COM") == "<offload.01J9Z@example.com>"

    def test_other_ids_are_hashed(self) -> None:
        """Job ids with characters not allowed in a Message-ID are hashed, distinctly."""
        first = make_message_id("job <1>", "example.com")
        assert first.startswith("<offload.h")
        assert " " not in first
        assert first != make_message_id("job <2>", "example.com")

    def test_international_domain_uses_idna(self) -> None:
        """Non-ASCII domains are IDNA-encoded."""
        assert make_message_id("1", "exämple.com").endswith("@xn--exmple-cua.com>")

    def test_bad_domain_refused(self) -> None:
        """A domain with a line break cannot become a Message-ID."""
        with pytest.raises(ValueError, match="single line"):
            make_message_id("1", "example.com\r\nBcc: x")

    def test_random_ids_differ(self) -> None:
        """Outside a job, each message gets a fresh id."""
        assert random_message_id("example.com") != random_message_id("example.com")
