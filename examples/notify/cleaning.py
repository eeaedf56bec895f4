"""CSV cleaning for the file job: one messy upload in, three tidy files out, memory flat.

``clean_csv(source, out_dir)`` reads a CSV of unknown encoding and delimiter and publishes
``cleaned.csv`` (UTF-8, comma-separated, ``\\n`` line ends, minimal quoting), ``data.jsonl``
(one JSON object per row, keys the cleaned header, values typed per column) and
``summary.json`` (:meth:`CleanSummary.to_json`). It is synchronous and uses the standard
library only, so the job may run it in a thread or a process of its own.

Encoding
    A UTF-8 byte-order mark means ``utf-8-sig`` (``had_bom``). Otherwise the first 64 KiB are
    decoded as strict UTF-8 (incrementally, so a character cut at the sample's edge is no
    error); if any byte there or later in the stream is not UTF-8, the whole file is read
    again as ``cp1252``, whose five undefined bytes are taken as Latin-1. A UTF-16 or UTF-32
    byte-order mark is refused: such files are to be saved as UTF-8 first.
Delimiter
    One of ``, ; TAB |``. Each is scored by how many records of the first 64 KiB split into
    as many fields as the header (which needs two at least); csv.Sniffer's guess wins when it
    scores best, else the best in that order. A row whose field count differs from the
    header's is repaired only when the cause is plain: extra trailing fields that are all
    blank are dropped (a trailing delimiter), and a row that splits into exactly the header's
    count with another candidate delimiter is read with it (a few ``;`` rows in a ``,`` file).
    Anything else is a :class:`CsvError` ("expected 4 fields (as in the header), found 6").
Header
    The first non-blank record. Names are trimmed, inner whitespace collapsed, NFC; a blank
    name becomes ``column_N`` (N its 1-based position), a repeated one gets ``_2``, ``_3``...
    A header-only file is valid: no rows, every column ``empty``.
Values
    Trimmed, inner runs of whitespace (line breaks in quoted fields too) made one space, NFC.
    ``"" NA N/A null NULL None -`` (case-sensitive) are missing: empty in cleaned.csv,
    ``null`` in data.jsonl, counted per column. Records that are blank (only whitespace and
    delimiters) are skipped and not counted. A row equal to an earlier one after this
    normalisation is dropped (``duplicates_dropped``); ``rows_in`` counts rows before that.
Types
    Inferred per column over every kept row: ``integer`` (``-?[0-9]+`` without leading zeros,
    so codes such as ``007`` stay text), ``decimal`` (integers and ``.`` decimals with an
    optional exponent; thousands separators and decimal commas are out of scope: such
    columns are text), ``boolean`` (the words true/false/yes/no in any case; 0/1 columns are
    integers), ``date`` (``YYYY-MM-DD``), ``datetime`` (``YYYY-MM-DD[T ]HH:MM[:SS[.f]]``,
    optional ``Z`` or ``+HH:MM``), mixtures other than integer+decimal are ``text``; ``empty``
    when every value is missing. distinct_capped counts distinct non-missing values up to
    10 000. In data.jsonl numbers are written verbatim (exact, no float rounding), booleans
    as true/false, dates, datetimes and text as strings.
Passes
    Pass 1 (progress 0-50 %) reads the source, normalises, drops duplicates, infers types and
    writes cleaned.csv; pass 2 (50-100 %) reads cleaned.csv back and writes data.jsonl with
    the types now known, so no row is normalised twice. ``on_progress`` is called, and
    ``should_stop`` asked, each time another 1 % of the pass's file has been read, and
    ``on_progress(1.0, ...)`` once the outputs are published.
Errors
    :class:`CsvError` names the 1-based physical line where the record starts: an empty file,
    a NUL byte, a line over 1 MiB, a field over 1 MiB or a quote still open at the end of the
    file, a field count that cannot be explained. The csv module's process-wide field limit
    is raised to 1 MiB when it is lower.
Publishing
    Everything is written into a hidden sibling ``.<name>.partial-<host>-<pid>-<random>``,
    fsynced, and renamed into place last; a failure or :class:`Cancelled` removes it, so
    out_dir shows all three files or none. out_dir may be absent, empty, or hold exactly a
    previous result (the three files, replaced only on success, so a job retried after a
    crash past the rename succeeds again); other content is refused before any work. What a
    crashed run on this host left (its pid gone) is removed by the next run. Outputs depend
    on the input bytes only, so a rerun writes identical files. POSIX renames are assumed.
Memory
    Constant but for duplicate detection: a 16-byte blake2b digest per kept row, kept in
    65 536 byte arrays at ~15 bytes a row (about 25 MB for 100 MB of CSV), and per column at
    most 10 000 distinct values (strings up to 32 characters, longer ones as digests).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["OUTPUTS", "Cancelled", "CleanSummary", "ColumnSummary", "CsvError", "clean_csv"]

OUTPUTS = ("cleaned.csv", "data.jsonl", "summary.json")
# Enough for the header and a few hundred rows; sniffing it takes milliseconds.
_SAMPLE_BYTES = 64 * 1024
# Reads from disk in chunks this size: progress and cancel checks cannot be finer anyway.
_CHUNK = 64 * 1024
# A longer line or field is nearly always a quote left open or a file that is not CSV.
_MAX_LINE = 1024 * 1024
_DISTINCT_CAP = 10_000
# Distinct values longer than this are kept as 16-byte digests, bounding a column's memory.
_DISTINCT_INLINE = 32
_CANDIDATES = ",;\t|"
_DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "a tab", "|": "'|'"}
_MISSING = frozenset({"", "NA", "N/A", "null", "NULL", "None", "-"})
_BOOLEANS = {"true": "true", "yes": "true", "false": "false", "no": "false"}
_CP1252_ERRORS = "offload.cp1252-latin1"


def _latin1_for_undefined(error: UnicodeError) -> tuple[str, int]:
    """cp1252 leaves 0x81 0x8D 0x8F 0x90 0x9D undefined; Latin-1 maps every byte."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error(_CP1252_ERRORS, _latin1_for_undefined)


@dataclass(frozen=True)
class ColumnSummary:
    name: str
    type: str
    missing: int
    distinct_capped: int


@dataclass(frozen=True)
class CleanSummary:
    rows_in: int
    rows_out: int
    duplicates_dropped: int
    delimiter: str
    encoding: str
    had_bom: bool
    columns: list[ColumnSummary]

    def to_json(self) -> dict[str, object]:
        """The summary.json document: plain JSON types only."""
        return asdict(self)


class CsvError(Exception):
    """The file cannot be read as CSV; ``line`` is the 1-based physical line in the source."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(line, reason)
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class Cancelled(Exception):
    """should_stop() asked to stop; nothing was published and the partial files are gone."""


_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)


def _is_date(value: str) -> bool:
    if not _DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    if not _DATETIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


_MATCHES: dict[str, Callable[[str], object]] = {
    "integer": _INTEGER.fullmatch,
    "decimal": _DECIMAL.fullmatch,
    "boolean": lambda value: value.lower() in _BOOLEANS,
    "date": _is_date,
    "datetime": _is_datetime,
    "empty": lambda value: False,
}
_TO_JSON: dict[str, Callable[[str], str]] = {
    "integer": str,
    "decimal": str,
    "boolean": lambda value: _BOOLEANS[value.lower()],
    "date": encode_basestring,
    "datetime": encode_basestring,
    "text": encode_basestring,
    "empty": encode_basestring,
}


def _widen(kind: str, value: str) -> str:
    """The narrowest type holding both the column so far and a value it did not match."""
    kinds = ("integer", "decimal", "boolean", "date", "datetime")
    found = next((k for k in kinds if _MATCHES[k](value)), "text")
    if kind == "empty":
        return found
    return "decimal" if {kind, found} == {"integer", "decimal"} else "text"


class _Columns:
    """Per-column type, missing count and capped distinct values, updated row by row."""

    def __init__(self, width: int) -> None:
        self.types = ["empty"] * width
        self.missing = [0] * width
        self.distinct: list[set[str | bytes]] = [set() for _ in range(width)]

    def observe(self, values: list[str]) -> None:
        types, missing, distinct = self.types, self.missing, self.distinct
        for i, value in enumerate(values):
            if not value:
                missing[i] += 1
                continue
            seen = distinct[i]
            if len(seen) < _DISTINCT_CAP:
                seen.add(value if len(value) <= _DISTINCT_INLINE else _digest(value))
            kind = types[i]
            if kind != "text" and not _MATCHES[kind](value):
                types[i] = _widen(kind, value)


class _DigestSet:
    """Row digests for duplicate detection, packed: ~15 bytes a row where a set takes ~90.

    A digest's first two bytes pick one of 65 536 byte arrays, which holds the other 14 bytes
    of each digest filed there back to back.
    """

    _WIDTH = 14

    def __init__(self) -> None:
        self._buckets = [bytearray() for _ in range(1 << 16)]

    def add(self, digest: bytes) -> bool:
        """Files ``digest``; False when it was there already."""
        bucket = self._buckets[digest[0] << 8 | digest[1]]
        rest = digest[2:]
        found = bucket.find(rest)
        while found != -1:
            if found % self._WIDTH == 0:
                return False
            found = bucket.find(rest, found + 1)
        bucket += rest
        return True


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class _CountingFile(io.FileIO):
    """A file that counts the bytes it has handed out: progress without seeking."""

    consumed = 0

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        count = super().readinto(buffer)
        self.consumed += count or 0
        return count


def _open_text(path: Path, encoding: str) -> tuple[_CountingFile, IO[str]]:
    raw = _CountingFile(path, "r")
    errors = _CP1252_ERRORS if encoding == "cp1252" else "strict"
    buffered = io.BufferedReader(raw, _CHUNK)
    return raw, io.TextIOWrapper(buffered, encoding=encoding, errors=errors, newline="")


class _Lines:
    """Physical lines for csv.reader: refuses NUL bytes and endless lines, and keeps the
    current record's lines so that a row can be read again with another delimiter."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text
        self.number = 0
        self.record: list[str] = []
        self.at_end = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._text.readline(_MAX_LINE + 1)
        if not line:
            self.at_end = True
            raise StopIteration
        self.number += 1
        if len(line) > _MAX_LINE:
            raise CsvError(self.number, "the line is longer than 1 MiB; is this a CSV file?")
        if "\x00" in line:
            raise CsvError(self.number, "the line holds a NUL byte; is this a binary file?")
        self.record.append(line)
        return line


class _Progress:
    def __init__(
        self,
        on_progress: Callable[[float, str], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self._on_progress = on_progress
        self._should_stop = should_stop
        self._last = 0.0

    def stop_if_asked(self) -> None:
        if self._should_stop is not None and self._should_stop():
            raise Cancelled("stopped on request; nothing was published")

    def report(self, fraction: float, message: str, *, check: bool = True) -> None:
        if check:
            self.stop_if_asked()
        # Never backwards, even when an encoding fallback reads the source again.
        self._last = min(max(fraction, self._last), 1.0)
        if self._on_progress is not None:
            self._on_progress(self._last, message)


def _detect_encoding(source: Path) -> tuple[str, bool]:
    with source.open("rb") as file:
        head = file.read(_SAMPLE_BYTES)
        at_end = not file.read(1)
    if not head:
        raise CsvError(1, "the file is empty")
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", True
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)):
        raise CsvError(1, "the file is UTF-16 or UTF-32; save it as UTF-8")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=at_end)
    except UnicodeDecodeError:
        return "cp1252", False
    return "utf-8", False


def _sample(source: Path, encoding: str) -> str:
    """The first 64 KiB as text, cut after the last whole line unless that is the file's end."""
    with source.open("rb") as file:
        head = file.read(_SAMPLE_BYTES)
        at_end = not file.read(1)
    errors = _CP1252_ERRORS if encoding == "cp1252" else "strict"
    text = codecs.getincrementaldecoder(encoding)(errors).decode(head, final=at_end)
    if at_end:
        return text
    cut = max(text.rfind("\n"), text.rfind("\r"))
    return text[: cut + 1] if cut >= 0 else text


def _consistency(sample: str, delimiter: str) -> int:
    """How many sample records split into as many fields as the header (0: not this one)."""
    width = score = 0
    try:
        for fields in csv.reader(io.StringIO(sample), delimiter=delimiter, skipinitialspace=True):
            if not any(field.strip() for field in fields):
                continue
            if not width:
                width = len(fields)
                if width < 2:
                    return 0
            score += len(fields) == width
    except csv.Error:
        pass  # a record cut at the sample's edge, or malformed: the rows so far count
    return score


def _pick_delimiter(sample: str) -> str:
    scores = {delimiter: _consistency(sample, delimiter) for delimiter in _CANDIDATES}
    best = max(scores.values())
    if not best:
        return ","  # one column: nothing to split
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=_CANDIDATES).delimiter
    except csv.Error:
        sniffed = ""
    if scores.get(sniffed) == best:
        return sniffed
    return next(delimiter for delimiter in _CANDIDATES if scores[delimiter] == best)


def _normalise(fields: list[str]) -> list[str]:
    values = [" ".join(field.split()) for field in fields]
    if not "".join(values).isascii():
        values = [unicodedata.normalize("NFC", value) for value in values]
    return values


def _header(values: list[str]) -> list[str]:
    names: list[str] = []
    for position, value in enumerate(values, 1):
        base = value or f"column_{position}"
        name, count = base, 1
        while name in names:
            count += 1
            name = f"{base}_{count}"
        names.append(name)
    return names


def _fit(values: list[str], width: int, record: str, delimiter: str, line: int) -> list[str]:
    """A row of the wrong length made right when the cause is plain, else a CsvError."""
    if len(values) > width and not any(values[width:]):
        return values[:width]
    for other in _CANDIDATES.replace(delimiter, ""):
        try:
            rows = list(csv.reader(io.StringIO(record), delimiter=other, skipinitialspace=True))
        except csv.Error:
            continue
        if len(rows) == 1 and len(rows[0]) == width:
            return _normalise(rows[0])
    raise CsvError(
        line,
        f"expected {width} fields (as in the header), found {len(values)}; "
        f"quote values that contain {_DELIMITER_NAMES[delimiter]}",
    )


def _csv_reason(error: csv.Error) -> str:
    if "field larger than field limit" in str(error):
        return "a field is longer than 1 MiB; is a quote left open on this line?"
    return f"unreadable CSV ({error})"


@dataclass
class _Scan:
    delimiter: str
    names: list[str]
    columns: _Columns
    rows_in: int
    rows_out: int


def _scan(source: Path, encoding: str, cleaned: Path, progress: _Progress) -> _Scan:
    """Pass 1: normalise, drop duplicates, infer types, write cleaned.csv."""
    delimiter = _pick_delimiter(_sample(source, encoding))
    size = max(source.stat().st_size, 1)
    step = max(size // 100, 1)
    mark = step
    raw, text = _open_text(source, encoding)
    with text, cleaned.open("w", encoding="utf-8", newline="") as out:
        lines = _Lines(text)
        reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
        writer = csv.writer(out, lineterminator="\n")
        names: list[str] = []
        columns = _Columns(0)
        seen = _DigestSet()
        rows_in = rows_out = 0
        while True:
            start = lines.number + 1
            lines.record.clear()
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                raise CsvError(start, _csv_reason(error)) from None
            if lines.at_end:
                raise CsvError(start, "a quoted field opened here is never closed")
            if raw.consumed >= mark:
                mark = raw.consumed + step
                progress.report(raw.consumed / size / 2, "reading rows (pass 1 of 2)")
            values = [" ".join(field.split()) for field in fields]
            if not any(values):
                continue
            if not "".join(values).isascii():
                values = [unicodedata.normalize("NFC", value) for value in values]
            if not names:
                names = _header(values)
                columns = _Columns(len(names))
                writer.writerow(names)
                continue
            if len(values) != len(names):
                values = _fit(values, len(names), "".join(lines.record), delimiter, start)
            values = ["" if value in _MISSING else value for value in values]
            rows_in += 1
            if seen.add(_digest("\x00".join(values))):
                rows_out += 1
                writer.writerow(values)
                columns.observe(values)
        if not names:
            raise CsvError(1, "the file is empty (no header row)")
        _sync(out)
    return _Scan(delimiter, names, columns, rows_in, rows_out)


def _write_jsonl(cleaned: Path, target: Path, scan: _Scan, progress: _Progress) -> None:
    """Pass 2: cleaned.csv's rows as JSON objects, each value in its column's type."""
    keys = [encode_basestring(name) + ":" for name in scan.names]
    converters = [_TO_JSON[kind] for kind in scan.columns.types]
    size = max(cleaned.stat().st_size, 1)
    step = max(size // 100, 1)
    mark = step
    raw, text = _open_text(cleaned, "utf-8")
    with text, target.open("w", encoding="utf-8", newline="") as out:
        reader = csv.reader(text)
        next(reader)
        for row in reader:
            pairs = [
                key + (convert(value) if value else "null")
                for key, convert, value in zip(keys, converters, row, strict=True)
            ]
            out.write("{" + ",".join(pairs) + "}\n")
            if raw.consumed >= mark:
                mark = raw.consumed + step
                progress.report(0.5 + raw.consumed / size / 2, "writing JSON lines (pass 2 of 2)")
        _sync(out)


def _sync(file: IO[str]) -> None:
    file.flush()
    os.fsync(file.fileno())


def _sync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_out_dir(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file; pass a directory path for the outputs")
    present = {path.name for path in out_dir.iterdir()}
    if present and present != set(OUTPUTS):
        raise FileExistsError(
            f"{out_dir} holds other files ({', '.join(sorted(present - set(OUTPUTS)))}); pass a"
            " new or empty directory, or one holding only a previous result"
        )


def _sibling(out_dir: Path, kind: str) -> Path:
    owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    return out_dir.parent / f".{out_dir.name}.{kind}-{owner}"


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) would end the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(out_dir: Path) -> None:
    """Partial and set-aside directories of crashed runs on this host, never a live run's."""
    prefixes = tuple(
        f".{out_dir.name}.{kind}-{socket.gethostname()}-" for kind in ("partial", "old")
    )
    for path in out_dir.parent.iterdir():
        if path.name.startswith(prefixes):
            pid = path.name.rsplit("-", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _publish(temporary: Path, out_dir: Path) -> None:
    _check_out_dir(out_dir)  # again: it may have changed while the file was read
    if not out_dir.exists():
        os.rename(temporary, out_dir)
    else:
        previous = _sibling(out_dir, "old")
        os.rename(out_dir, previous)
        try:
            os.rename(temporary, out_dir)
        except BaseException:
            os.rename(previous, out_dir)
            raise
        shutil.rmtree(previous, ignore_errors=True)
    _sync_dir(out_dir.parent)


def clean_csv(
    source: Path,
    out_dir: Path,
    *,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CleanSummary:
    """Cleans ``source`` into ``out_dir`` (see the module docstring for every rule).

    Raises CsvError for a file that cannot be read as CSV, Cancelled when should_stop()
    returns True, FileExistsError when out_dir holds anything but a previous result.
    """
    source, out_dir = Path(source), Path(out_dir).absolute()
    _check_out_dir(out_dir)
    if csv.field_size_limit() < _MAX_LINE:
        csv.field_size_limit(_MAX_LINE)
    progress = _Progress(on_progress, should_stop)
    progress.report(0.0, "detecting encoding and delimiter")
    encoding, had_bom = _detect_encoding(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    temporary = _sibling(out_dir, "partial")
    temporary.mkdir()
    try:
        cleaned = temporary / "cleaned.csv"
        try:
            scan = _scan(source, encoding, cleaned, progress)
        except UnicodeDecodeError:  # a non-UTF-8 byte after the sample
            encoding = "cp1252"
            scan = _scan(source, encoding, cleaned, progress)
        _write_jsonl(cleaned, temporary / "data.jsonl", scan, progress)
        columns = scan.columns
        summary = CleanSummary(
            rows_in=scan.rows_in,
            rows_out=scan.rows_out,
            duplicates_dropped=scan.rows_in - scan.rows_out,
            delimiter=scan.delimiter,
            encoding=encoding,
            had_bom=had_bom,
            columns=[
                ColumnSummary(name, kind, missing, len(distinct))
                for name, kind, missing, distinct in zip(
                    scan.names, columns.types, columns.missing, columns.distinct, strict=True
                )
            ],
        )
        with (temporary / "summary.json").open("w", encoding="utf-8", newline="") as out:
            out.write(json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n")
            _sync(out)
        _sync_dir(temporary)
        progress.stop_if_asked()
        _publish(temporary, out_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    progress.report(1.0, "done", check=False)
    return summary
