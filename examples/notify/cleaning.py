"""CSV cleaning for the file job: one messy upload in, three tidy files out, memory flat.

``clean_csv`` publishes ``cleaned.csv`` (UTF-8, ``,``, ``\\n`` line ends, minimal quoting),
``data.jsonl`` (an object per row, keyed by the cleaned header, values typed per column) and
``summary.json`` (:meth:`CleanSummary.to_json`). Synchronous and stdlib-only.

Encoding: a UTF-8 BOM means ``utf-8-sig``; else strict UTF-8, checked on the first 64 KiB
(incrementally: a character cut at the edge is no error) and while streaming; at a non-UTF-8
byte the whole file is read again as cp1252 (its 5 undefined bytes as Latin-1). No UTF-16/32.

Delimiter: one of ``, ; TAB |``, scored by how many sample records split into as many fields
as the header (which needs two); csv.Sniffer's guess wins if it scores best, else the best in
that order. A row of another length is repaired only when the cause is plain: blank extra
trailing fields are dropped, and a row splitting into the header's count with another
candidate is read so (a few ``;`` rows in a ``,`` file); else CsvError names the line.

Header: the first non-blank record; blank names become ``column_N`` (N the position), repeats
get ``_2``, ``_3``. Header and values are trimmed, whitespace runs (line breaks in quotes too)
made one space, NFC. ``"" NA N/A null NULL None -`` (case-sensitive) are missing: empty in
cleaned.csv, null in data.jsonl, counted per column. Blank records are skipped, not counted.
A row equal to an earlier one after all this is dropped (counted in ``rows_in`` only).

Types, over all kept rows: ``integer`` (no leading zeros: ``007`` is a code, text);
``decimal`` (``.`` decimals, optional exponent; thousands separators and decimal commas are
out of scope: text); ``boolean`` (the words true/false/yes/no, any case; 0/1 stay integers);
``date`` (``YYYY-MM-DD``); ``datetime`` (``YYYY-MM-DD[T ]HH:MM[:SS[.f]][Z|+HH:MM]``); integer
with decimal is decimal, other mixes text; ``empty`` if all missing. data.jsonl has numbers
verbatim (exact), booleans as true/false, the rest as strings.

Passes: pass 1 (progress 0-50 %) normalises, drops duplicates, infers types and writes
cleaned.csv; pass 2 (50-100 %) reads cleaned.csv back into data.jsonl, types now known.
``on_progress`` and ``should_stop`` come at each further 1 % of the pass's file; 1.0 at the end.

Errors: CsvError has the 1-based physical line where the record starts: a file with no header,
a NUL byte, a line or field over 1 MiB (the csv module's process-wide limit is raised to
that), a quote open at the end of the file, a field count nothing explains.

Publishing: files are written and fsynced in a hidden sibling ``.<name>.partial-<host>-<pid>-
<random>``, renamed into place last, removed on failure or Cancelled: out_dir shows all three
files or none. out_dir may be absent, empty or hold exactly a previous result (replaced only
on success, so a retry after a crash past the rename succeeds); other content is refused up
front. The next run removes what crashed runs on this host left (their pid gone). Output
depends on the input bytes only: reruns write identical files. POSIX renames assumed.

Memory is flat but for a 16-byte blake2b digest per kept row for duplicate detection, packed
at ~15 bytes (~30 MB for 100 MB of CSV), and at most 10 000 distinct values per column."""

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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime
from json.encoder import encode_basestring
from pathlib import Path

__all__ = ["OUTPUTS", "Cancelled", "CleanSummary", "ColumnSummary", "CsvError", "clean_csv"]

OUTPUTS = ("cleaned.csv", "data.jsonl", "summary.json")
# Enough for the header and a few hundred rows to score the delimiters on.
_SAMPLE_BYTES = 64 * 1024
_SNIFF_CHARS = 8 * 1024  # Sniffer's regex is quadratic on stray quotes: 64 KiB took 5 s
# A longer line or field is nearly always a quote left open or a file that is not CSV.
_MAX_LINE = 1024 * 1024
_DISTINCT_CAP = 10_000
# Longer distinct values are kept as 16-byte digests, bounding a column's memory.
_DISTINCT_INLINE = 32
_CANDIDATES = ",;\t|"
_DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "a tab", "|": "'|'"}
_MISSING = frozenset({"", "NA", "N/A", "null", "NULL", "None", "-"})
_BOOLEANS = {"true": "true", "yes": "true", "false": "false", "no": "false"}
_ERRORS = "offload.cp1252-latin1"


def _latin1_for_undefined(error: UnicodeError) -> tuple[str, int]:
    """cp1252 leaves 0x81 0x8D 0x8F 0x90 0x9D undefined; Latin-1 maps every byte. UTF-8 is
    decoded under this name too, and strictly: its errors stay errors."""
    if not isinstance(error, UnicodeDecodeError) or error.encoding.startswith("utf"):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error(_ERRORS, _latin1_for_undefined)


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
        self.line, self.reason = line, reason

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class Cancelled(Exception):
    """should_stop() asked to stop; nothing was published and the partial files are gone."""


def _iso(pattern: str, parse: Callable[[str], object]) -> Callable[[str], bool]:
    """A matcher that also rejects what the pattern admits but the calendar does not."""
    compiled = re.compile(pattern)

    def matches(value: str) -> bool:
        try:
            return bool(compiled.fullmatch(value)) and parse(value) is not None
        except ValueError:
            return False

    return matches


_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIME = r"[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
_MATCHES: dict[str, Callable[[str], object]] = {
    "integer": re.compile(r"-?(?:0|[1-9][0-9]*)").fullmatch,
    "decimal": re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?").fullmatch,
    "boolean": lambda value: value.lower() in _BOOLEANS,
    "date": _iso(_DATE, date.fromisoformat),
    "datetime": _iso(_DATE + _TIME, datetime.fromisoformat),
    "empty": lambda value: False,
}
# Numbers go out verbatim: the patterns above admit only valid JSON numbers.
_TO_JSON: dict[str, Callable[[str], str]] = {
    **dict.fromkeys(("date", "datetime", "text", "empty"), encode_basestring),
    **dict.fromkeys(("integer", "decimal"), str),
    "boolean": lambda value: _BOOLEANS[value.lower()],
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
            if len(distinct[i]) < _DISTINCT_CAP:
                distinct[i].add(value if len(value) <= _DISTINCT_INLINE else _digest(value))
            if types[i] != "text" and not _MATCHES[types[i]](value):
                types[i] = _widen(types[i], value)


class _DigestSet:
    """Row digests for duplicate detection, packed: ~15 bytes a row where a set takes ~90.
    A digest's first two bytes pick one of 65 536 byte arrays, which holds the other 14
    bytes of each digest filed there, back to back."""

    def __init__(self) -> None:
        self._buckets = [bytearray() for _ in range(1 << 16)]

    def add(self, digest: bytes) -> bool:
        """Files ``digest``; False when it was there already."""
        bucket, rest = self._buckets[digest[0] << 8 | digest[1]], digest[2:]
        found = bucket.find(rest)
        while found > 0 and found % 14:  # a match across two digests' boundary
            found = bucket.find(rest, found + 1)
        if found >= 0:
            return False
        bucket += rest
        return True


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class _Lines:
    """Physical lines for csv.reader: refuses NUL bytes and endless lines, and keeps the
    current record's lines so that a row can be read again with another delimiter."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._text, self.number, self.record, self.at_end = text, 0, list[str](), False

    def __iter__(self) -> Iterator[str]:
        while line := self._text.readline(_MAX_LINE + 1):
            self.number += 1
            if len(line) > _MAX_LINE:
                raise CsvError(self.number, "the line is longer than 1 MiB; is this a CSV file?")
            if "\x00" in line:
                raise CsvError(self.number, "the line holds a NUL byte; is this a binary file?")
            self.record.append(line)
            yield line
        self.at_end = True


@dataclass
class _Progress:
    on_progress: Callable[[float, str], None] | None
    should_stop: Callable[[], bool] | None
    last: float = 0.0
    mark: int = 0  # the pass reports again once this many bytes of its file are read
    _pass: tuple[int, float, str] = (1, 0.0, "")

    def begin(self, size: int, base: float, message: str) -> None:
        self._pass, self.mark = (max(size, 1), base, message), 0

    def tick(self, consumed: int) -> None:
        size, base, message = self._pass
        self.mark = consumed + max(size // 100, 1)
        self.report(base + consumed / size / 2, message)

    def report(self, fraction: float, message: str, *, check: bool = True) -> None:
        if check and self.should_stop is not None and self.should_stop():
            raise Cancelled("stopped on request; nothing was published")
        # Never backwards, even when an encoding fallback reads the source again.
        self.last = min(max(fraction, self.last), 1.0)
        if self.on_progress is not None:
            self.on_progress(self.last, message)


def _head(source: Path) -> tuple[bytes, bool]:
    with source.open("rb") as file:
        head = file.read(_SAMPLE_BYTES + 1)
    return head[:_SAMPLE_BYTES], len(head) <= _SAMPLE_BYTES


def _detect_encoding(source: Path) -> tuple[str, bool]:
    head, whole = _head(source)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", True
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)):
        raise CsvError(1, "the file is UTF-16 or UTF-32; save it as UTF-8")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError:
        return "cp1252", False
    return "utf-8", False


def _pick_delimiter(source: Path, encoding: str) -> str:
    """Scores each candidate on the sample's whole lines (see the module docstring)."""
    head, whole = _head(source)
    sample = codecs.getincrementaldecoder(encoding)(_ERRORS).decode(head, final=whole)
    cut = max(sample.rfind("\n"), sample.rfind("\r"))
    sample = sample if whole or cut < 0 else sample[: cut + 1]
    scores = dict.fromkeys(_CANDIDATES, 0)
    for delimiter in _CANDIDATES:
        width = 0
        try:
            for fields in csv.reader(io.StringIO(sample), delimiter=delimiter):
                if any(field.strip() for field in fields):
                    width = width or len(fields)
                    scores[delimiter] += width > 1 and len(fields) == width
        except csv.Error:
            pass  # a record cut at the sample's edge, or malformed: the rows so far count
    best = max(scores.values())
    if not best:
        return ","  # one column: nothing to split
    try:
        sniffed = csv.Sniffer().sniff(sample[:_SNIFF_CHARS], delimiters=_CANDIDATES).delimiter
    except csv.Error:
        sniffed = ""
    return sniffed if scores.get(sniffed) == best else max(scores, key=scores.__getitem__)


def _normalise(fields: list[str]) -> list[str]:
    values = [" ".join(field.split()) for field in fields]
    if not "".join(values).isascii():
        values = [unicodedata.normalize("NFC", value) for value in values]
    return values


def _header(values: list[str]) -> list[str]:
    names: list[str] = []
    for position, value in enumerate(values, 1):
        base = name = value or f"column_{position}"
        count = 1
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
    hint = f"quote values that contain {_DELIMITER_NAMES[delimiter]}"
    raise CsvError(line, f"expected {width} fields (as in the header), found {len(values)}; {hint}")


def _scan(source: Path, encoding: str, bom: bool, tmp: Path, progress: _Progress) -> CleanSummary:
    """Pass 1: normalise, drop duplicates, infer types, write cleaned.csv."""
    delimiter = _pick_delimiter(source, encoding)
    progress.begin(source.stat().st_size, 0.0, "reading rows (pass 1 of 2)")
    binary = source.open("rb")  # its position is the bytes handed to the decoder: progress
    binary.seek(len(codecs.BOM_UTF8) if bom else 0)  # a BOM is no text, even read as cp1252
    text = io.TextIOWrapper(binary, encoding=encoding, errors=_ERRORS, newline="")
    with text, (tmp / "cleaned.csv").open("w", encoding="utf-8", newline="") as out:
        lines = _Lines(text)
        reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
        writer = csv.writer(out, lineterminator="\n")
        names, columns, seen, rows_in, rows_out = list[str](), _Columns(0), _DigestSet(), 0, 0
        while True:
            start = lines.number + 1
            lines.record.clear()
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                if "field larger than field limit" in str(error):
                    raise CsvError(start, "a field is longer than 1 MiB; is a quote left open?")
                raise CsvError(start, f"unreadable CSV ({error})") from None
            if lines.at_end:  # the reader wanted more lines to finish the record
                raise CsvError(start, "a quoted field opened here is never closed")
            if binary.tell() >= progress.mark:
                progress.tick(binary.tell())
            values = _normalise(fields)
            if not any(values):
                continue
            if not names:
                names, columns = _header(values), _Columns(len(values))
                writer.writerow(names)
                continue
            if len(values) != len(names):
                values = _fit(values, len(names), "".join(lines.record), delimiter, start)
            values = ["" if value in _MISSING else value for value in values]
            rows_in += 1
            if seen.add(_digest("\x00".join(values))):  # NUL cannot occur in a value
                rows_out += 1
                writer.writerow(values)
                columns.observe(values)
    if not names:
        raise CsvError(1, "the file is empty")
    stats = zip(names, columns.types, columns.missing, columns.distinct, strict=True)
    found = [ColumnSummary(name, kind, missing, len(seen)) for name, kind, missing, seen in stats]
    return CleanSummary(rows_in, rows_out, rows_in - rows_out, delimiter, encoding, bom, found)


def _write_jsonl(temporary: Path, columns: list[ColumnSummary], progress: _Progress) -> None:
    """Pass 2: cleaned.csv's rows as JSON objects, each value in its column's type."""
    keys = [encode_basestring(column.name) + ":" for column in columns]
    encode = [_TO_JSON[column.type] for column in columns]
    cleaned = temporary / "cleaned.csv"
    progress.begin(cleaned.stat().st_size, 0.5, "writing JSON lines (pass 2 of 2)")
    binary = cleaned.open("rb")
    text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
    with text, (temporary / "data.jsonl").open("w", encoding="utf-8", newline="") as out:
        reader = csv.reader(text)
        next(reader)
        for row in reader:
            pairs = [k + (f(v) if v else "null") for k, f, v in zip(keys, encode, row, strict=True)]
            out.write("{" + ",".join(pairs) + "}\n")
            if binary.tell() >= progress.mark:
                progress.tick(binary.tell())


def _fsync(path: Path) -> None:
    """Flushes a file's or a directory's entries to disk, so a crash cannot undo them."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_out_dir(out_dir: Path) -> None:
    present = {path.name for path in out_dir.iterdir()} if out_dir.exists() else set()
    if present and present != set(OUTPUTS):
        raise FileExistsError(
            f"{out_dir} holds other files ({', '.join(sorted(present - set(OUTPUTS)))}); pass a"
            " new or empty directory, or one holding only a previous result"
        )


def _sibling(out_dir: Path, kind: str) -> Path:
    owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    return out_dir.parent / f".{out_dir.name}.{kind}-{owner}"


def _remove_leftovers(out_dir: Path) -> None:
    """Partial and set-aside directories of crashed runs on this host, never a live run's."""
    host = socket.gethostname()
    prefixes = tuple(f".{out_dir.name}.{kind}-{host}-" for kind in ("partial", "old"))
    for path in out_dir.parent.iterdir():
        pid = path.name.rsplit("-", 2)[-2] if path.name.startswith(prefixes) else ""
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)  # signal 0: only whether the process exists
            except ProcessLookupError:  # no such process: the run that owned it crashed
                shutil.rmtree(path, ignore_errors=True)
            except PermissionError:  # another user's live process
                pass


def _publish(temporary: Path, out_dir: Path) -> None:
    _check_out_dir(out_dir)  # again: it may have changed while the file was read
    previous = _sibling(out_dir, "old")
    if out_dir.exists():
        os.rename(out_dir, previous)
    try:
        os.rename(temporary, out_dir)
    except BaseException:
        if previous.exists():
            os.rename(previous, out_dir)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    _fsync(out_dir.parent)


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
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_LINE))
    progress = _Progress(on_progress, should_stop)
    progress.report(0.0, "detecting encoding and delimiter")
    encoding, had_bom = _detect_encoding(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    temporary = _sibling(out_dir, "partial")
    temporary.mkdir()
    try:
        try:
            summary = _scan(source, encoding, had_bom, temporary, progress)
        except UnicodeDecodeError:  # a byte after the sample is not UTF-8
            summary = _scan(source, "cp1252", had_bom, temporary, progress)
        _write_jsonl(temporary, summary.columns, progress)
        document = json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n"
        (temporary / "summary.json").write_text(document, encoding="utf-8")
        for path in (*(temporary / name for name in OUTPUTS), temporary):
            _fsync(path)
        progress.report(progress.last, "publishing")
        _publish(temporary, out_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    progress.report(1.0, "done", check=False)
    return summary
