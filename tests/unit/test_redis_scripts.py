"""The Redis scripts as loaded: each carries the prelude helpers it uses and no others.

The conformance suite runs every script against a real server; these checks pin what that
cannot see: a helper left out would fail only on the path that calls it, and the field order
the client decodes by must match the one the scripts return.
"""

from __future__ import annotations

import re
from importlib import resources

from offload.stores.redis.layout import FIELDS
from offload.stores.redis.scripts import SCRIPTS, load_scripts

LUA = resources.files("offload.stores.redis").joinpath("lua")
PRELUDE = LUA.joinpath("prelude.lua").read_text()
HELPERS = set(re.findall(r"^local (?:function )?(\w+)", PRELUDE, re.MULTILINE))


def _code(text: str) -> str:
    return re.sub(r"--[^\n]*", "", text)


def _uses(text: str) -> set[str]:
    return {name for name in HELPERS if re.search(rf"\b{name}\b", _code(text))}


def _defines(text: str) -> set[str]:
    return set(re.findall(r"^local (?:function )?(\w+)", text, re.MULTILINE)) & HELPERS


def test_every_script_defines_each_helper_it_uses() -> None:
    loaded = load_scripts()
    assert set(SCRIPTS) == set(loaded)
    for name, text in loaded.items():
        assert _uses(text) <= _defines(text), name


def test_scripts_carry_no_helper_they_do_not_use() -> None:
    for name, text in load_scripts().items():
        body = LUA.joinpath(f"{name}.lua").read_text()
        assert _defines(text) == _uses(text), name
        assert text.endswith(body)
    # The hot paths stay lean: an enqueue does not build the count deltas, a heartbeat
    # carries only the clock.
    scripts = load_scripts()
    assert "flush_counts" not in _defines(scripts["enqueue"])
    assert {"now_s", "fmt"} == _defines(scripts["heartbeat"])


def test_row_returns_the_fields_in_the_clients_order() -> None:
    call = re.search(r"redis\.call\('HMGET', k, (.*?)\)\s*end", PRELUDE, re.DOTALL)
    assert call is not None
    assert tuple(re.findall(r"'(\w+)'", call.group(1))) == FIELDS
