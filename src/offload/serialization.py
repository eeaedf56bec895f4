"""JSON encoding of task arguments and results, typed by the task's own signature.

Each task gets one pydantic ``TypeAdapter`` per parameter, built once at decoration: values are
checked and encoded at enqueue time (so a bad argument raises before anything is stored) and
decoded back to the annotated type in the worker. JSON only; nothing is ever unpickled.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, from_json, to_json

from offload.errors import PayloadTooLarge
from offload.jobs import JobContext
from offload.redaction import Secret, is_secret_key

_ANY: TypeAdapter[Any] = TypeAdapter(Any)
_NATIVE = (int, float, str, bool)
EMPTY_ARGS = "[]"
EMPTY_KWARGS = "{}"


def _json(value: Any) -> str:
    """Compact JSON of values already made JSON-ready (natives, or pydantic's JSON mode).

    pydantic-core's encoder takes about 0.4 µs for a small call where ``json.dumps`` takes
    2.5 (it builds a new C encoder each call): a sixth of preparing a job. Non-finite floats
    are written as ``NaN``/``Infinity``, as ``json.dumps`` writes them, and read back by
    ``json.loads``; text is UTF-8 rather than ``\\u`` escapes."""
    return to_json(value).decode()


def _loads(text: str) -> Any:
    """Parse stored JSON with pydantic-core (0.2 µs for a small call, against 1.4 µs for
    ``json.loads``, once per job run). It refuses a lone UTF-16 surrogate escape, which
    ``json.dumps`` wrote for such a string before the compact encoding (pydantic-core cannot
    encode one): that text goes to ``json.loads``, which also words a real syntax error."""
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


class PayloadError(ValueError):
    """A stored payload does not fit the task's signature (a changed task, or bad data)."""


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        # Forward references that cannot be resolved: treat those parameters as Any rather
        # than refusing to register the task.
        return {}


class Codec:
    """Encodes the arguments and result of one task function."""

    def __init__(
        self, fn: Callable[..., Any], task_name: str, dependencies: Collection[str] = ()
    ) -> None:
        self.task_name = task_name
        # Parameters the worker fills (``offload.depends``): never encoded, never passed.
        self.dependency_params = frozenset(dependencies)
        hints = _hints(fn)
        signature = inspect.signature(fn)
        self.context_param: str | None = None
        params: list[inspect.Parameter] = []
        self.adapters: dict[str, TypeAdapter[Any]] = {}
        # The annotations as written, to name what a parameter expects when a value is refused.
        self.hints: dict[str, Any] = {}
        # Parameters annotated int, float, str or bool: a value of exactly that type is its
        # own JSON form, so pydantic (several µs a value) is skipped for it both ways.
        self.native: dict[str, type] = {}
        self.var_positional: str | None = None
        self.var_keyword: str | None = None
        self.context_first = False
        # Parameters annotated ``Secret`` or named like secrets: keyword ones by name,
        # positional-only ones by index, as they are stored (see ``offload.redaction``).
        self.secret_params: list[str | int] = []
        # Stored in the JSON array, not by name: positional-only parameters, and with *args
        # every parameter before it too (a call cannot name them and fill *args as well).
        self.by_position: list[str] = []
        has_var_positional = any(
            p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()
        )
        after_dependency = False
        for index, param in enumerate(signature.parameters.values()):
            hint = hints.get(param.name, Any)
            if hint is JobContext:
                self.context_param = param.name
                self.context_first = index == 0
                continue
            if param.name in self.dependency_params:
                after_dependency = True
                continue
            if after_dependency and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                # A value in this position would be meant for the dependency before it (as
                # the type checker reads the call): the parameters after one are named.
                param = param.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            positional = param.kind is inspect.Parameter.POSITIONAL_ONLY or (
                has_var_positional and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            )
            if positional:
                self.by_position.append(param.name)
            # A parameter named like a secret (``api_token``) is treated as one too.
            if _is_secret(hint) or is_secret_key(param.name):
                self.secret_params.append(self._secret_marker(param, len(params), positional))
            params.append(param)
            # The annotation of *args and **kwargs is that of each value in them.
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                hint = tuple[hint, ...]  # type: ignore[valid-type]
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                hint = dict[str, hint]  # type: ignore[valid-type]
            adapter: TypeAdapter[Any] = _ANY if hint is Any else TypeAdapter(hint)
            self.adapters[param.name] = adapter
            self.hints[param.name] = hint
            if hint in _NATIVE and not positional:
                self.native[param.name] = hint
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                self.var_positional = param.name
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                self.var_keyword = param.name
        # The whole call as written, without the context: to name a dependency a call filled.
        self.full_signature = signature.replace(
            parameters=[p for p in signature.parameters.values() if p.name != self.context_param]
        )
        self.signature = signature.replace(parameters=params)
        self.no_params = not params
        # Parameters that take plain names only (no *args, **kwargs or positional-only ones):
        # the usual shape, whose calls can be matched to names without ``Signature.bind``,
        # which costs more than the rest of encoding or decoding a small call.
        self.simple = all(
            p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            for p in params
        )
        self.positional_names = [
            p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        self.required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)
        ret = hints.get("return", Any)
        self.result_adapter: TypeAdapter[Any] = (
            _ANY if ret is Any or ret is type(None) else TypeAdapter(ret)
        )

    def _secret_marker(
        self, param: inspect.Parameter, position: int, by_position: bool
    ) -> str | int:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return param.name  # **secrets: hidden when shown, but values stay unknown
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(
                f"task {self.task_name!r}: Secret cannot mark *{param.name}; mark a named "
                "parameter instead"
            )
        return position if by_position else param.name

    def _dump(self, name: str, adapter: TypeAdapter[Any], value: Any) -> Any:
        try:
            return adapter.dump_python(value, mode="json", warnings="error")
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise self._refusal(name, adapter, value, exc) from None

    def _refusal(
        self, name: str, adapter: TypeAdapter[Any], value: Any, exc: Exception
    ) -> TypeError:
        """Word why a value was refused: a value of another type than the annotation (what
        pydantic's serializer reports as a warning about an unexpected value) is named as
        such, with the innermost offending item; only a value that no JSON can hold gets
        pydantic's own reason. Runs on the error path only, so the checks cost nothing on an
        enqueue that succeeds."""
        task = self.task_name
        try:
            fitted = adapter.validate_python(value, strict=True)
        except ValidationError as invalid:
            hint = self.hints.get(name, Any)
            # A union's errors are one per member, located by member name: no item to show.
            nested = "" if _is_union(hint) else _first_item(name, invalid)
            return TypeError(
                f"argument {name!r} of task {task!r} expects {_type_name(hint)}, got "
                f"{type(value).__name__}{nested}"
            )
        if adapter is not _ANY:
            try:
                adapter.dump_python(fitted, mode="json", warnings="error")
            except (PydanticSerializationError, ValueError, TypeError):
                pass
            else:  # it converts to the annotated type (a dict for a model) but is not one
                return TypeError(
                    f"argument {name!r} of task {task!r} expects "
                    f"{_type_name(self.hints.get(name, Any))}, got {type(value).__name__}"
                )
        return TypeError(
            f"argument {name!r} of task {task!r} cannot be stored as JSON "
            f"({type(value).__name__}): {exc}. Pass JSON-compatible values, pydantic "
            "models, dataclasses, datetimes, UUIDs, Decimals or enums, annotated on the "
            "task's parameters."
        )

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        """Check the call against the signature and encode it; raises ``TypeError``."""
        if not args and not kwargs and self.no_params:
            return EMPTY_ARGS, EMPTY_KWARGS
        if self.dependency_params and not self.dependency_params.isdisjoint(kwargs):
            self._refuse_dependency(args, kwargs)
        named: dict[str, Any] = {}
        adapters = self.adapters
        fast = self._match(args, kwargs)
        if fast is not None:
            native = self.native
            for name, value in fast:
                if type(value) is native.get(name):
                    named[name] = value
                else:
                    named[name] = self._dump(name, adapters[name], value)
            return EMPTY_ARGS, _json(named) if named else EMPTY_KWARGS
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            if self.dependency_params:
                self._refuse_dependency(args, kwargs)
            raise TypeError(f"task {self.task_name!r}: {exc}") from None
        return self._encode_bound(bound)

    def encode_piped(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        """Encode a call that leaves out the first parameter, which a workflow fills with
        the result before it (``offload.workflows``): the store puts that value first in
        the stored array when it releases the step. Raises ``TypeError`` when the task has
        no such parameter or the rest of the call does not fit."""
        params = list(self.signature.parameters.values())
        first = params[0] if params else None
        if first is None or first.kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            raise TypeError(
                f"task {self.task_name!r} takes no positional parameter for the result of the "
                "step before it; give it one first, or use an immutable signature "
                "(task.si(...)) that ignores that result"
            )
        if self.dependency_params and not self.dependency_params.isdisjoint(kwargs):
            self._refuse_dependency(args, kwargs)
        rest = params if first.kind is inspect.Parameter.VAR_POSITIONAL else params[1:]
        try:
            bound = self.signature.replace(parameters=rest).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"task {self.task_name!r}, after the result of the step before it: {exc}"
            ) from None
        # Stored as any call is (named, unless by position): the value goes in front.
        return self._encode_bound(bound)

    def _encode_bound(self, bound: inspect.BoundArguments) -> tuple[str, str]:
        positional: list[Any] = []
        named: dict[str, Any] = {}
        adapters = self.adapters
        for name, value in bound.arguments.items():
            adapter = adapters[name]
            if name == self.var_positional:
                positional.extend(self._dump(name, adapter, value))
            elif name == self.var_keyword:
                named.update(self._dump(name, adapter, value))
            elif name in self.by_position:
                positional.append(self._dump(name, adapter, value))
            else:
                named[name] = self._dump(name, adapter, value)
        return (
            _json(positional) if positional else EMPTY_ARGS,
            _json(named) if named else EMPTY_KWARGS,
        )

    def _refuse_dependency(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise naming the dependency a call gave a value to, by name or by position."""
        named = [name for name in kwargs if name in self.dependency_params]
        if not named:
            try:
                bound = self.full_signature.bind_partial(*args, **kwargs)
            except TypeError:
                return
            named = [name for name in bound.arguments if name in self.dependency_params]
        if named:
            raise TypeError(
                f"task {self.task_name!r}: {named[0]} is a dependency the worker provides; "
                "do not pass it"
            )

    def _match(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[tuple[str, Any]] | None:
        """The call as (name, value) pairs, as ``Signature.bind`` would give them, when the
        shape is simple and the call fits; ``None`` sends the caller to ``bind`` (which also
        words the error of a call that does not fit)."""
        if not self.simple or len(args) > len(self.positional_names):
            return None
        pairs = list(zip(self.positional_names, args, strict=False))
        if kwargs:
            adapters = self.adapters
            taken = self.positional_names[: len(args)]
            for name in kwargs:
                if name not in adapters or name in taken:
                    return None
            pairs.extend(kwargs.items())
        if len(pairs) < len(self.required) or not self.required.issubset(name for name, _ in pairs):
            return None
        return pairs

    def decode_args(self, args: str, kwargs: str) -> tuple[list[Any], dict[str, Any]]:
        """Rebuild the call from stored JSON; raises ``PayloadError`` if it does not fit."""
        if args == EMPTY_ARGS and kwargs == EMPTY_KWARGS and self.no_params:
            return [], {}
        try:
            raw_args = [] if args == EMPTY_ARGS else _loads(args)
            raw_kwargs = {} if kwargs == EMPTY_KWARGS else _loads(kwargs)
            if not isinstance(raw_args, list) or not isinstance(raw_kwargs, dict):
                raise PayloadError("args must be a JSON array and kwargs a JSON object")
            fast = self._match(raw_args, raw_kwargs)
            pairs: Iterable[tuple[str, Any]] = (
                fast
                if fast is not None
                else self.signature.bind(*raw_args, **raw_kwargs).arguments.items()
            )
        except (TypeError, ValueError) as exc:
            raise PayloadError(
                f"stored arguments do not fit task {self.task_name!r}: {exc}"
            ) from None
        out_args: list[Any] = []
        out_kwargs: dict[str, Any] = {}
        native = self.native
        for name, value in pairs:
            if type(value) is native.get(name):
                out_kwargs[name] = value  # natives are named: never *args, **kwargs or positional
                continue
            adapter = self.adapters[name]
            try:
                decoded = adapter.validate_python(value)
            except ValidationError as exc:
                raise PayloadError(
                    f"argument {name!r} of task {self.task_name!r} is invalid: {exc}"
                ) from None
            if name == self.var_positional:
                out_args.extend(decoded)
            elif name == self.var_keyword:
                out_kwargs.update(decoded)
            elif name in self.by_position:
                out_args.append(decoded)
            else:
                out_kwargs[name] = decoded
        return out_args, out_kwargs

    def add_context(self, args: list[Any], kwargs: dict[str, Any], ctx: JobContext) -> None:
        """Put the context where the function declared it (first, or by name)."""
        if self.context_param is None:
            return
        if self.context_first:
            args.insert(0, ctx)
        else:
            kwargs[self.context_param] = ctx

    def encode_result(self, value: Any) -> str:
        if value is None:
            return "null"
        try:
            return json.dumps(self.result_adapter.dump_python(value, mode="json"))
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise TypeError(
                f"the result of task {self.task_name!r} cannot be stored as JSON "
                f"({type(value).__name__}): {exc}"
            ) from None

    def decode_result(self, raw: str) -> Any:
        if raw == "null":
            return None
        return self.result_adapter.validate_json(raw)


def payload_size(task_name: str, limit: int, args: str, kwargs: str) -> int:
    """The UTF-8 size of encoded arguments; raises ``PayloadTooLarge`` over ``limit``.

    Callers skip it for calls whose length in characters is at most a quarter of the limit
    (UTF-8 takes at most four bytes a character), so only a large call is measured; an ASCII
    text (``isascii`` reads a flag CPython keeps) is measured without encoding it."""
    size = sum(len(text) if text.isascii() else len(text.encode()) for text in (args, kwargs))
    if size > limit:
        raise PayloadTooLarge(task_name, size, limit)
    return size


# A dotted name inside an annotation's repr: ``__main__.User``, ``typing.Optional``.
_QUALIFIED = re.compile(r"\b(?:\w+\.)+(\w+)")


def _type_name(hint: Any) -> str:
    """An annotation as it was written: ``int``, ``list[User]``, ``datetime | None``."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = hint.__origin__
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return _QUALIFIED.sub(r"\1", repr(hint))


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _first_item(name: str, invalid: ValidationError) -> str:
    """`` (items[0]: Input should be a valid integer, got str)`` for the first nested error;
    nothing when the value as a whole is of the wrong type, which the message says already."""
    errors = invalid.errors(include_url=False)
    if not errors or not errors[0]["loc"]:
        return ""
    first = errors[0]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
    return f" ({name}{path}: {first['msg']}, got {type(first['input']).__name__})"


def _is_secret(hint: Any) -> bool:
    if typing.get_origin(hint) is not typing.Annotated:
        return False
    return any(m is Secret or isinstance(m, Secret) for m in hint.__metadata__)
