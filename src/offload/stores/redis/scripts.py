"""The Redis store's Lua scripts: loaded from ``lua/`` beside this module, each with the
prelude helpers it uses, and called by SHA so that the body crosses the wire only when the
server lost its script cache."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from hashlib import sha1
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

SCRIPTS = (
    "enqueue",
    "enqueue_capped",
    "enqueue_flow",
    "claim",
    "peek",
    "complete",
    "heartbeat",
    "progress",
    "requeue",
    "cancel",
    "retry",
    "purge_scan",
    "purge_drop",
    "list",
    "list_index",
    "activity",
    "next",
    "reserve",
    "release_key",
    "advance_schedule",
)


def load_scripts() -> dict[str, str]:
    folder = resources.files("offload.stores.redis").joinpath("lua")
    blocks = _prelude_blocks(folder.joinpath("prelude.lua").read_text())
    scripts = {}
    for name in SCRIPTS:
        body = folder.joinpath(f"{name}.lua").read_text()
        scripts[name] = "".join(_needed(blocks, body)) + body
    return scripts


_DEFINES = re.compile(r"^local (?:function )?(\w+)", re.MULTILINE)
_COMMENT = re.compile(r"--[^\n]*")


def _prelude_blocks(prelude: str) -> list[tuple[set[str], str]]:
    """The prelude's definitions, one block per blank-line-separated paragraph, with the
    names each defines."""
    blocks = []
    for text in re.split(r"\n\s*\n", prelude):
        text = text.strip("\n")
        if text:
            blocks.append((set(_DEFINES.findall(text)), text + "\n\n"))
    return blocks


def _needed(blocks: list[tuple[set[str], str]], body: str) -> list[str]:
    """The blocks ``body`` uses, directly or through another block, in the prelude's order.

    Redis runs a script's whole text on every call, so each helper a script does not use
    (a closure, a table) would cost every call of it for nothing."""
    chosen: set[int] = set()
    code = _COMMENT.sub("", body)
    while True:
        more = {
            i
            for i, (names, _) in enumerate(blocks)
            if i not in chosen and any(re.search(rf"\b{n}\b", code) for n in names)
        }
        if not more:
            return [blocks[i][1] for i in sorted(chosen)]
        chosen |= more
        code += _COMMENT.sub("", "".join(blocks[i][1] for i in more))


Exchange = Callable[[list[tuple[Any, ...]]], Awaitable[list[Any]]]
BlockingExchange = Callable[[list[tuple[Any, ...]]], list[Any]]


def lost_scripts(results: list[Any]) -> list[int]:
    """Which replies say the server no longer has the script (a restart, ``SCRIPT FLUSH``)."""
    return [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]


def raise_errors(results: list[Any]) -> list[Any]:
    for value in results:
        if isinstance(value, Exception):
            raise value
    return results


"""Sends commands in one round trip and returns their replies, error replies as values."""


class Scripts:
    """EVALSHA with the script cache: the body goes over the wire only when the server lost
    it (a restart or ``SCRIPT FLUSH``). redis-py's pipeline checks every script with an extra
    ``SCRIPT EXISTS`` round trip per pipeline, which the hot path cannot afford."""

    def __init__(self) -> None:
        self.sources = load_scripts()
        self.shas = {name: sha1(src.encode()).hexdigest() for name, src in self.sources.items()}

    async def load(self, client: Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for source in self.sources.values():
            pipe.script_load(source)
        await pipe.execute()

    async def run(
        self, exchange: Exchange, client: Redis, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Run raw commands (EVALSHA built by ``evalsha``) in one round trip.

        After a server restart the cache is empty: the scripts are loaded and only the
        commands that met NOSCRIPT are sent again (the others already ran)."""
        results = await exchange(commands)
        missing = lost_scripts(results)
        if missing:
            await self.load(client)
            again = await exchange([commands[i] for i in missing])
            for i, value in zip(missing, again, strict=True):
                results[i] = value
        return raise_errors(results)

    def run_blocking(
        self, exchange: BlockingExchange, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        """``run`` for a caller outside the event loop, over a blocking exchange."""
        results = exchange(commands)
        missing = lost_scripts(results)
        if missing:
            exchange([("SCRIPT", "LOAD", source) for source in self.sources.values()])
            again = exchange([commands[i] for i in missing])
            for i, value in zip(missing, again, strict=True):
                results[i] = value
        return raise_errors(results)

    def evalsha(self, name: str, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.shas[name], len(keys), *keys, *args)
