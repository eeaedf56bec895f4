"""Mail settings: OFFLOAD_SMTP_* variables and a .env file configure the mailer, and the
ports default by TLS mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from offload.email import Mailer, MailSettings


class TestSettings:
    def test_from_environment(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """OFFLOAD_SMTP_* variables configure the mailer; the password stays secret."""
        monkeypatch.chdir(tmp_path)  # no stray .env
        for name, value in {
            "HOST": "smtp.example.com",
            "PORT": "2525",
            "USERNAME": "app",
            "PASSWORD": "hunter22",
            "TLS": "implicit",
            "TIMEOUT": "7.5",
            "SENDER": "App <app@example.com>",
        }.items():
            monkeypatch.setenv(f"OFFLOAD_SMTP_{name}", value)
        settings = MailSettings()
        mailer = Mailer.from_settings(settings)
        assert (mailer.host, mailer.port, mailer.tls, mailer.timeout) == (
            "smtp.example.com",
            2525,
            "implicit",
            7.5,
        )
        assert str(mailer.sender) == '"App" <app@example.com>'
        assert settings.password == SecretStr("hunter22")
        for text in (repr(settings), str(settings), repr(mailer)):
            assert "hunter22" not in text

    def test_dotenv_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A .env file in the working directory is read too, ignoring other keys."""
        monkeypatch.chdir(tmp_path)
        (tmp_path / ".env").write_text("OFFLOAD_SMTP_HOST=mail.internal\nOFFLOAD_STORE=x\n")
        assert MailSettings().host == "mail.internal"

    def test_default_ports(self) -> None:
        """Ports default by TLS mode: 587 STARTTLS, 465 implicit, 25 none."""
        assert [Mailer(tls=t).port for t in ("starttls", "implicit", "none")] == [587, 465, 25]
