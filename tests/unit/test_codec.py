"""The codec matches calls to parameter names without ``Signature.bind`` for plain signatures;
whatever path it takes, a call must encode, decode and fail exactly as ``bind`` says."""

from __future__ import annotations

import enum
import inspect
import json
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from offload.serialization import Codec, PayloadError


def plain(a: int, b: str = "x", *, c: float = 1.0) -> None: ...


def required_kw(a: int, *, c: float) -> None: ...


def varargs(a: int, *rest: int, **more: str) -> None: ...


def posonly(a: int, /, b: int = 2) -> None: ...


def natives(a: int, b: float, c: str = "", d: bool = False) -> None: ...


def before_star(a: int, *rest: int) -> None: ...


CALLS: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
    (plain, (1,), {}),
    (plain, (1, "y"), {}),
    (plain, (1,), {"c": 2.5}),
    (plain, (), {"a": 1, "b": "z"}),
    (plain, (1, "y"), {"c": 3.0}),
    (required_kw, (1,), {"c": 2.0}),
    (varargs, (1, 2, 3), {"k": "v"}),
    (posonly, (1,), {"b": 5}),
    (natives, (1, 2.5, "x", True), {}),
    (natives, (1, 2), {"d": True}),  # an int for a float: pydantic's path
    (natives, (True, 2.5), {}),  # a bool for an int: pydantic's path
    (before_star, (1, 2, 3), {}),
]

BAD: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
    (plain, (), {}),  # missing a
    (plain, (1, "y", 2.0), {}),  # c is keyword-only
    (plain, (1,), {"a": 2}),  # a twice
    (plain, (1,), {"zzz": 2}),  # unknown keyword
    (required_kw, (1,), {}),  # missing c
    (posonly, (), {"a": 1}),  # positional-only by name
]


def _bound(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return dict(inspect.signature(fn).bind(*args, **kwargs).arguments)


@pytest.mark.parametrize(("fn", "args", "kwargs"), CALLS)
def test_a_call_round_trips_to_what_bind_gives(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    codec = Codec(fn, "t")
    enc_args, enc_kwargs = codec.encode_args(args, kwargs)
    out_args, out_kwargs = codec.decode_args(enc_args, enc_kwargs)
    assert _bound(fn, tuple(out_args), out_kwargs) == _bound(fn, args, kwargs)


@pytest.mark.parametrize(("fn", "args", "kwargs"), BAD)
def test_a_call_that_does_not_fit_fails_as_bind_words_it(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError) as expected:
        inspect.signature(fn).bind(*args, **kwargs)
    codec = Codec(fn, "t")
    with pytest.raises(TypeError, match="task 't'") as raised:
        codec.encode_args(args, kwargs)
    assert str(expected.value) in str(raised.value)
    # The same call found in storage (written by other code or an older version of the task).
    with pytest.raises(PayloadError, match="do not fit"):
        codec.decode_args(json.dumps(list(args)), json.dumps(kwargs))


def test_native_values_keep_their_exact_type() -> None:
    codec = Codec(natives, "t")
    enc = codec.encode_args((1, 2.5, "x", True), {})
    assert (["[]", '{"a":1,"b":2.5,"c":"x","d":true}']) == list(enc)
    _, kwargs = codec.decode_args(*enc)
    assert [int, float, str, bool] == [type(kwargs[k]) for k in "abcd"]


def test_non_finite_floats_and_non_ascii_text_round_trip() -> None:
    codec = Codec(natives, "t")
    enc = codec.encode_args((1, float("inf"), "zürich ✓"), {})
    assert '{"a":1,"b":Infinity,"c":"zürich ✓"}' == enc[1]
    _, kwargs = codec.decode_args(*enc)
    assert {"a": 1, "b": float("inf"), "c": "zürich ✓"} == kwargs
    _, nan = codec.decode_args(*codec.encode_args((1, float("nan")), {}))
    assert nan["b"] != nan["b"]


def test_arguments_stored_in_json_dumps_style_still_decode() -> None:
    """Jobs written before the compact encoding (spaces, \\u escapes) stay readable."""
    codec = Codec(natives, "t")
    stored = json.dumps({"a": 1, "b": 2.5, "c": "zürich"})
    assert '"z\\u00fcrich"' in stored
    _, kwargs = codec.decode_args("[]", stored)
    assert {"a": 1, "b": 2.5, "c": "zürich"} == kwargs


def test_a_lone_surrogate_stored_by_json_dumps_still_decodes() -> None:
    """``json.dumps`` escaped a lone surrogate; pydantic-core's parser refuses the escape."""
    codec = Codec(natives, "t")
    stored = json.dumps({"a": 1, "b": 2.5, "c": "x\ud800y"})
    _, kwargs = codec.decode_args("[]", stored)
    assert "x\ud800y" == kwargs["c"]


def test_stored_arguments_that_are_not_json_fail_with_the_task_named() -> None:
    codec = Codec(natives, "t")
    with pytest.raises(PayloadError, match="task 't'"):
        codec.decode_args("[]", '{"a": 1,')


class Point(BaseModel):
    x: int


class Shade(enum.Enum):
    RED = "red"


def typed(
    x: int,
    *rest: int,
    items: list[int] | None = None,
    point: Point | None = None,
    when: datetime | None = None,
    shade: Shade = Shade.RED,
    thing: object = None,
) -> None: ...


REFUSED: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
    (("not an int",), {}, "argument 'x' of task 'T' expects int, got str"),
    ((1.5,), {}, "argument 'x' of task 'T' expects int, got float"),
    ((), {"x": "1"}, "argument 'x' of task 'T' expects int, got str"),
    (
        (1, 2, "3"),
        {},
        "argument 'rest' of task 'T' expects tuple[int, ...], got tuple "
        "(rest[1]: Input should be a valid integer, got str)",
    ),
    (
        (1,),
        {"items": [1, "two"]},
        "argument 'items' of task 'T' expects list[int] | None, got list",
    ),
    ((1,), {"point": {"x": 1}}, "argument 'point' of task 'T' expects Point | None, got dict"),
    ((1,), {"when": "2024-01-01"}, "argument 'when' of task 'T' expects datetime | None, got str"),
    ((1,), {"shade": "red"}, "argument 'shade' of task 'T' expects Shade, got str"),
]


@pytest.mark.parametrize(("args", "kwargs", "message"), REFUSED)
def test_a_value_of_another_type_is_refused_naming_both_types_without_a_warning(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    """Not "cannot be stored as JSON" (it could be, as some other type), and no pydantic
    serializer warning on the way."""
    codec = Codec(typed, "T")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TypeError) as refused:
            codec.encode_args(args, kwargs)
    assert message == str(refused.value)
    assert [] == [str(w.message) for w in caught]


def test_a_value_no_json_can_hold_says_so() -> None:
    codec = Codec(typed, "T")
    with pytest.raises(TypeError, match="argument 'thing' of task 'T' cannot be stored as JSON"):
        codec.encode_args((1,), {"thing": object()})


def test_the_annotated_types_still_encode() -> None:
    codec = Codec(typed, "T")
    when = datetime(2024, 1, 1, tzinfo=UTC)
    args, kwargs = codec.encode_args(
        (1, 2), {"items": [3], "point": Point(x=4), "when": when, "shade": Shade.RED}
    )
    assert "[1,2]" == args
    assert {
        "items": [3],
        "point": {"x": 4},
        "when": "2024-01-01T00:00:00Z",
        "shade": "red",
    } == json.loads(kwargs)
