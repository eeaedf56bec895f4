"""Configuration mistakes fail early with a message that names the fix."""

from __future__ import annotations

import pytest

from offload import ConfigError, Offload
from offload.app import DEFAULT_URL


class TestStoreUrl:
    @pytest.mark.parametrize(
        "url",
        ["nonsense", "ftp://host/x", "sqlite://host/x.db", "sqlite:///"],
    )
    def test_bad_urls_raise_config_error(self, url: str) -> None:
        """A malformed URL or unknown scheme raises ConfigError showing accepted forms."""
        with pytest.raises(ConfigError) as info:
            Offload(url)
        assert "sqlite:///" in str(info.value)

    @pytest.mark.parametrize("url", ["postgresql://app@db/jobs", "postgres://app@db/jobs"])
    def test_postgresql_says_it_is_coming(self, url: str) -> None:
        """The PostgreSQL store does not exist yet: the error says so and names what works
        today, rather than asking for an extra that would not provide it."""
        with pytest.raises(ConfigError) as info:
            Offload(url)
        message = str(info.value)
        assert "not part of this release yet" in message
        assert "redis://" in message
        assert "sqlite:///" in message
        assert "install" not in message

    def test_unknown_sqlite_option(self) -> None:
        """An unknown URL option is named, with the options that exist."""
        with pytest.raises(ConfigError, match=r"foo.*synchronous"):
            Offload("sqlite:///x.db?foo=1")

    def test_url_falls_back_to_env_then_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No URL: $OFFLOAD_URL, else the embedded default file."""
        monkeypatch.setenv("OFFLOAD_URL", "memory://")
        assert "memory://" == Offload().url
        monkeypatch.delenv("OFFLOAD_URL")
        assert DEFAULT_URL == Offload().url


class TestTaskDeclaration:
    def test_duplicate_names_are_refused(self) -> None:
        """Two different functions cannot share a task name."""
        jobs = Offload("memory://")

        @jobs.task(name="same")
        async def a() -> None: ...

        with pytest.raises(ConfigError, match="already registered"):

            @jobs.task(name="same")
            async def b() -> None: ...

    def test_cpu_bound_must_be_sync(self) -> None:
        """cpu_bound=True on an async function is refused."""
        jobs = Offload("memory://")
        with pytest.raises(TypeError, match="sync"):

            @jobs.task(cpu_bound=True)
            async def a() -> None: ...

    def test_bad_options(self) -> None:
        """Per-call options are checked when given."""
        jobs = Offload("memory://")

        @jobs.task
        async def t() -> None: ...

        with pytest.raises(ValueError, match="not both"):
            t.options(delay=1, run_at=__import__("datetime").datetime.now())
        with pytest.raises(ValueError, match="retries"):
            t.options(retries=-1)
