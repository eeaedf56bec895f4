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
    def test_postgresql_urls_build_a_store_without_connecting(self, url: str) -> None:
        """Both spellings name the PostgreSQL store; nothing connects until the app opens."""
        assert "PostgresStore" == type(Offload(url).store).__name__

    @pytest.mark.parametrize(
        ("url", "named"),
        [
            ("postgresql://app@db", "name the database"),
            ("postgresql://app@db:port/jobs", "invalid PostgreSQL URL"),
            ("postgresql://app@db/jobs?schema=a-b", "schema='a-b'"),
            ("postgresql://app@db/jobs?schema=1abc", "not starting with a digit"),
            (f"postgresql://app@db/jobs?schema={'s' * 56}", "at most 55"),
            ("postgresql://app@db/jobs?op_timeout=soon", "op_timeout='soon'"),
            ("postgresql://app@db/jobs?pool_max=1", "at least 2"),
            ("postgresql://app@db/jobs?migrate=maybe", "use true or false"),
        ],
    )
    def test_postgresql_url_mistakes_name_the_option_and_the_fix(
        self, url: str, named: str
    ) -> None:
        with pytest.raises(ConfigError) as info:
            Offload(url)
        assert named in str(info.value)

    def test_a_postgresql_password_never_shows_in_an_error(self) -> None:
        with pytest.raises(ConfigError) as info:
            Offload("postgresql://app:hunter2@db/jobs?schema=no-good")
        assert "hunter2" not in str(info.value)
        assert "app:***@db" in str(info.value)

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
