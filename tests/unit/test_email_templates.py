"""Templates: autoescaped HTML, plain text, subjects, StrictUndefined and derived text."""

from __future__ import annotations

from pathlib import Path

import pytest

from offload.email import (
    Address,
    InvalidMessage,
    PermanentEmailError,
    RenderedEmail,
    TemplateError,
    Templates,
    html_to_text,
)


class TestTemplates:
    def test_html_is_autoescaped(self, templates_dir: Path) -> None:
        """Context values are escaped in *.html templates."""
        rendered = Templates(templates_dir).render("welcome", name="<script>x</script>", code=1)
        assert rendered.html is not None
        assert "&lt;script&gt;x&lt;/script&gt;" in rendered.html
        assert "<script>" not in rendered.html

    def test_text_and_subject_are_not_escaped(self, templates_dir: Path) -> None:
        """*.txt templates (the subject included) are plain text."""
        rendered = Templates(templates_dir).render("receipt", number="A&B", total="<5>")
        assert rendered == RenderedEmail(
            subject="Receipt A&B",
            text="Total: <5> <not escaped>\n",
            html="<p>Total: &lt;5&gt;</p>\n",
        )

    def test_subject_collapses_whitespace(self, templates_dir: Path) -> None:
        """The subject is one line: the file's newline and any injected ones become spaces."""
        rendered = Templates(templates_dir).render("welcome", name="Bob\r\nBcc: x@y.org", code=1)
        assert rendered.subject == "Welcome, Bob Bcc: x@y.org!"

    def test_subject_keeps_no_break_spaces(self, templates_dir: Path) -> None:
        """Only spaces, tabs and line ends collapse: a no-break space is text and stays."""
        rendered = Templates(templates_dir).render("welcome", name="Ada\xa0 Bcc: x", code=1)
        assert rendered.subject == "Welcome, Ada\xa0 Bcc: x!"

    @pytest.mark.parametrize("char", ["\u2028", "\x85", "\x00", "\x0b", "\x0c"])
    def test_line_separator_in_context_makes_an_invalid_message(
        self, templates_dir: Path, char: str
    ) -> None:
        """A control character or Unicode line separator from the context is not hidden as a
        space: the message is refused with a permanent error naming the template and field."""
        with pytest.raises(InvalidMessage, match=r"'welcome'.*subject.*single line") as info:
            Templates(templates_dir).message(
                "welcome", to="bob@example.com", context={"name": f"Bob{char}Bcc: x", "code": 1}
            )
        assert isinstance(info.value, PermanentEmailError)
        assert f"U+{ord(char):04X}" in str(info.value)

    def test_text_derived_from_html(self, templates_dir: Path) -> None:
        """Without a .txt template the text part is derived from the HTML."""
        rendered = Templates(templates_dir).render("welcome", name="Zoë & co", code=42)
        assert rendered.text == "Hello Zoë & co\n\nYour code: 42\n"

    def test_missing_variable_raises(self, templates_dir: Path) -> None:
        """StrictUndefined: a missing variable fails at render, naming file and variable."""
        with pytest.raises(TemplateError, match=r"welcome\.html.*'code' is undefined"):
            Templates(templates_dir).render("welcome", name="Bob")

    def test_missing_subject_file(self, templates_dir: Path) -> None:
        """A template without a subject file fails with the file name and folder."""
        with pytest.raises(TemplateError, match=r"'nothere\.subject\.txt' not found"):
            Templates(templates_dir).render("nothere")

    def test_missing_body(self, templates_dir: Path) -> None:
        """A subject without any body is an error."""
        with pytest.raises(TemplateError, match="has no body"):
            Templates(templates_dir).render("nobody")

    def test_syntax_error(self, templates_dir: Path) -> None:
        """A template syntax error names the file and line."""
        (templates_dir / "broken.subject.txt").write_text("x")
        (templates_dir / "broken.txt").write_text("line\n{% if %}\n")
        with pytest.raises(TemplateError, match=r"'broken\.txt' line 2"):
            Templates(templates_dir).render("broken")

    def test_message_from_template(self, templates_dir: Path) -> None:
        """Templates.message builds a validated EmailMessage from the rendered parts."""
        message = Templates(templates_dir).message(
            "welcome", to="Bob <bob@example.com>", context={"name": "Bob", "code": 7}
        )
        assert message.to == [Address(email="bob@example.com", name="Bob")]
        assert (message.subject, message.text) == ("Welcome, Bob!", "Hello Bob\n\nYour code: 7\n")


class TestHtmlToText:
    def test_blocks_lists_and_links(self) -> None:
        """Paragraphs, line breaks, list items and link targets survive; markup does not."""
        html = (
            "<html><head><title>T</title><style>p {}</style></head><body>"
            "<h1>Hi &amp; welcome</h1><p>Dear <b>Zoë</b>,<br>thanks   for\n joining.</p>"
            "<ul><li>One</li><li>Two</li></ul>"
            '<p><a href="https://x.org/c">Confirm</a> or <a href="https://x.org">https://x.org</a>'
            "</p><script>alert(1)</script></body></html>"
        )
        expected = (
            "Hi & welcome\n\nDear Zoë,\nthanks for joining.\n\n- One\n- Two\n\n"
            "Confirm (https://x.org/c) or https://x.org\n"
        )
        assert html_to_text(html) == expected

    def test_pre_keeps_whitespace(self) -> None:
        """Preformatted text keeps its spacing."""
        assert html_to_text("<pre>  a\n    b</pre>") == "  a\n    b\n"

    def test_table_cells_are_spaced(self) -> None:
        """Table rows become lines with cells separated by spaces."""
        assert html_to_text("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>") == (
            "a b\nc\n"
        )
