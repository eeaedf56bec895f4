"""A big CSV cleaned in parallel chunks, publishing byte for byte what ``clean_csv`` would.

Three steps, each a job of its own (``tasks.py`` chains them as a chord):

1. ``plan_chunks`` reads the file once, the way ``clean_csv``'s first pass does (the same
   encoding detection and fallback, delimiter choice, header, line numbers and errors), but
   only parses: it cleans nothing. It cuts the records after the header into byte ranges
   that start and end on record boundaries, which only a parse from the start can find: a
   quoted field may hold line breaks. Every ``CsvError`` the file has is raised here, the
   first one in file order, so a broken file fails as one job would, before any chunk runs.
2. ``clean_range`` cleans one range with the plan's header, delimiter and encoding: rows
   normalised, repaired, deduplicated *within* the range, types and statistics gathered.
   It writes the kept rows, their digests and its statistics next to the upload.
3. ``merge_parts`` concatenates the ranges' rows in order, dropping the rows an earlier range
   already kept (so duplicates count across the whole file), combines the statistics, writes
   data.jsonl and summary.json with ``clean_csv``'s own code, and publishes the same way.

Why the combined statistics are exact: a column's type is the join of its values' kinds
(empty, then one kind, integer with decimal is decimal, any other mix text), which does not
depend on order or repeats; a range's distinct set is capped at the same 10 000, and the
union of capped sets reaches the cap exactly when the whole file's would; missing counts are
per row, so the merge takes off those of each row it drops as a duplicate.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from examples.notify.cleaning import (
    _DISTINCT_CAP,
    _ERRORS,
    _MAX_LINE,
    _MISSING,
    OUTPUTS,
    CleanSummary,
    ColumnSummary,
    CsvError,
    _check_out_dir,
    _Columns,
    _detect_encoding,
    _digest,
    _DigestSet,
    _fit,
    _fsync,
    _header,
    _Lines,
    _normalise,
    _pick_delimiter,
    _Progress,
    _publish,
    _remove_leftovers,
    _sibling,
    _write_jsonl,
)

__all__ = ["clean_range", "merge_parts", "plan_chunks"]

Progress = Callable[[float, str], None]
Stop = Callable[[], bool]
_DIGEST = 16


def _byte_length(encoding: str) -> Callable[[str], int]:
    """A decoded line's length in the file: cp1252 (with its Latin-1 fallback) is one byte
    per character, strict UTF-8 round-trips exactly."""
    if encoding == "cp1252":
        return len
    return lambda line: len(line) if line.isascii() else len(line.encode("utf-8"))


def _record(reader: Any, lines: _Lines, start: int) -> list[str] | None:
    """The next record, or None at the end; the errors ``clean_csv`` raises for it."""
    try:
        fields: list[str] = next(reader)
    except StopIteration:
        return None
    except csv.Error as error:
        if "field larger than field limit" in str(error):
            raise CsvError(start, "a field is longer than 1 MiB; is a quote left open?") from None
        raise CsvError(start, f"unreadable CSV ({error})") from None
    if lines.at_end:  # the reader wanted more lines to finish the record
        raise CsvError(start, "a quoted field opened here is never closed")
    return fields


def plan_chunks(
    source: Path,
    count: int,
    *,
    on_progress: Progress | None = None,
    should_stop: Stop | None = None,
) -> dict[str, Any]:
    """Up to ``count`` ranges of records (exactly ``count`` entries, the last ones empty
    when the file has fewer boundaries), with what every range needs to be cleaned alone."""
    source = Path(source)
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_LINE))
    progress = _Progress(on_progress, should_stop)
    progress.report(0.0, "detecting encoding and delimiter")
    encoding, had_bom = _detect_encoding(source)
    try:
        return _split(source, encoding, had_bom, count, progress)
    except UnicodeDecodeError:  # a byte after the sample is not UTF-8, as clean_csv falls back
        return _split(source, "cp1252", had_bom, count, progress)


def _split(
    source: Path, encoding: str, bom: bool, count: int, progress: _Progress
) -> dict[str, Any]:
    delimiter = _pick_delimiter(source, encoding)
    size = source.stat().st_size
    length = _byte_length(encoding)
    position = len(codecs.BOM_UTF8) if bom else 0
    with source.open("rb") as head:
        head.seek(position)
        if encoding == "utf-8-sig" and head.read(3) == codecs.BOM_UTF8:
            position += 3  # the utf-8-sig decoder drops a second BOM too: no text, 3 bytes
    step = max(size // 100, 1)
    binary = source.open("rb")
    binary.seek(len(codecs.BOM_UTF8) if bom else 0)
    text = io.TextIOWrapper(binary, encoding=encoding, errors=_ERRORS, newline="")
    bounds = [size * i // count for i in range(1, count)]
    ranges: list[list[int]] = []
    names: list[str] = []
    begin, first_line, mark = 0, 0, 0
    with text:
        lines = _Lines(text)
        reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
        while True:
            start = lines.number + 1
            lines.record.clear()
            fields = _record(reader, lines, start)
            if fields is None:
                break
            position += sum(map(length, lines.record))
            if position >= mark:
                mark = position + step
                progress.report(position / max(size, 1), "finding row boundaries")
            if not names:
                values = _normalise(fields)
                if any(values):
                    names = _header(values)
                    begin, first_line = position, lines.number + 1
                continue
            if len(fields) != len(names):
                values = _normalise(fields)
                if any(values):  # raises as clean_csv would, when nothing explains the row
                    _fit(values, len(names), "".join(lines.record), delimiter, start)
            if len(ranges) < len(bounds) and position >= bounds[len(ranges)]:
                ranges.append([begin, position, first_line])
                begin, first_line = position, lines.number + 1
    if not names:
        raise CsvError(1, "the file is empty")
    if position != size:  # every byte belongs to a line; a miscount would cut rows apart
        raise RuntimeError(f"counted {position} bytes of {size} in {source}")
    ranges.append([begin, position, first_line])
    ranges += [[position, position, lines.number + 1]] * (count - len(ranges))
    progress.report(1.0, "row boundaries found", check=False)
    header = {"names": names, "delimiter": delimiter, "encoding": encoding, "had_bom": bom}
    return {"header": header, "ranges": ranges}


class _Range(io.RawIOBase):
    """A file read from where it stands up to ``end``, and no further."""

    def __init__(self, file: io.FileIO, end: int) -> None:
        super().__init__()
        self._file, self._end = file, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._end - self._file.tell()
        if left <= 0:
            return 0
        return self._file.readinto(memoryview(buffer)[:left]) or 0


def _part(work: Path, index: int, suffix: str) -> Path:
    return work / f"part-{index:04d}.{suffix}"


def clean_range(
    source: Path,
    plan: dict[str, Any],
    index: int,
    work: Path,
    *,
    on_progress: Progress | None = None,
    should_stop: Stop | None = None,
) -> dict[str, Any]:
    """Cleans range ``index`` of the plan into ``work``; its statistics (the distinct values
    stay in the part's file: up to 10 000 a column is no job result)."""
    done = _part(work, index, "json")
    if done.exists():  # an earlier attempt finished, then its worker died
        return _result(json.loads(done.read_text()), plan, index)
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_LINE))
    begin, end, first_line = plan["ranges"][index]
    header = plan["header"]
    names: list[str] = header["names"]
    delimiter: str = header["delimiter"]
    # Only the file's start may hold a BOM; a range starts mid-file.
    encoding = "utf-8" if header["encoding"] == "utf-8-sig" else header["encoding"]
    progress, size, mark = _Progress(on_progress, should_stop), max(end - begin, 1), 0
    progress.report(0.0, f"cleaning chunk {index + 1}")
    work.mkdir(parents=True, exist_ok=True)
    rows_path, digests_path = _part(work, index, "csv"), _part(work, index, "digests")
    raw = source.open("rb", buffering=0)
    raw.seek(begin)
    text = io.TextIOWrapper(
        io.BufferedReader(_Range(raw, end)), encoding=encoding, errors=_ERRORS, newline=""
    )
    partial = done.with_suffix(".json.partial")
    try:
        columns, seen, rows_in = _Columns(len(names)), _DigestSet(), 0
        with (
            raw,
            text,
            rows_path.open("w", encoding="utf-8", newline="") as out,
            digests_path.open("wb") as digests,
        ):
            lines = _Lines(text)
            lines.number = first_line - 1
            reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
            writer = csv.writer(out, lineterminator="\n")
            while True:
                start = lines.number + 1
                lines.record.clear()
                fields = _record(reader, lines, start)
                if fields is None:
                    break
                if raw.tell() - begin >= mark:
                    mark = raw.tell() - begin + max(size // 100, 1)
                    progress.report((raw.tell() - begin) / size, f"cleaning chunk {index + 1}")
                values = _normalise(fields)
                if not any(values):
                    continue
                if len(values) != len(names):
                    values = _fit(values, len(names), "".join(lines.record), delimiter, start)
                values = ["" if value in _MISSING else value for value in values]
                rows_in += 1
                digest = _digest("\x00".join(values))
                if seen.add(digest):
                    writer.writerow(values)
                    digests.write(digest)
                    columns.observe(values)
        stats = {
            "rows_in": rows_in,
            "types": columns.types,
            "missing": columns.missing,
            "distinct": [_encode_distinct(values) for values in columns.distinct],
        }
        partial.write_text(json.dumps(stats), encoding="utf-8")
        for path in (rows_path, digests_path, partial):
            _fsync(path)
        partial.replace(done)  # last: a part with its statistics is complete
    except BaseException:  # cancelled or failed: no half part (a killed one is rewritten)
        for path in (rows_path, digests_path, partial):
            path.unlink(missing_ok=True)
        raise
    progress.report(1.0, f"chunk {index + 1} cleaned", check=False)
    return _result(stats, plan, index)


def _result(stats: dict[str, Any], plan: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "index": index,
        "header": plan["header"],
        "rows_in": stats["rows_in"],
        "types": stats["types"],
    }


def _encode_distinct(values: set[str | bytes]) -> dict[str, list[str]]:
    short = sorted(value for value in values if isinstance(value, str))
    digests = sorted(value.hex() for value in values if isinstance(value, bytes))
    return {"values": short, "digests": digests}


def _join(kind: str, other: str) -> str:
    """The type of a column whose two parts have these types (see the module docstring)."""
    if kind == other or other == "empty":
        return kind
    if kind == "empty":
        return other
    return "decimal" if {kind, other} == {"integer", "decimal"} else "text"


def merge_parts(
    parts: list[dict[str, Any]],
    work: Path,
    out_dir: Path,
    *,
    on_progress: Progress | None = None,
    should_stop: Stop | None = None,
) -> CleanSummary:
    """The parts' rows and statistics as one result in ``out_dir``, published as
    ``clean_csv`` publishes it (all three files or none)."""
    out_dir = Path(out_dir).absolute()
    _check_out_dir(out_dir)
    header = parts[0]["header"]
    names: list[str] = header["names"]
    width = len(names)
    progress = _Progress(on_progress, should_stop)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    temporary = _sibling(out_dir, "partial")
    temporary.mkdir()
    try:
        total = sum(_part(work, p["index"], "csv").stat().st_size for p in parts)
        progress.begin(total, 0.0, "merging chunks (pass 1 of 2)")
        types, missing = ["empty"] * width, [0] * width
        distinct: list[set[str | bytes]] = [set() for _ in range(width)]
        rows_in, rows_out, consumed, seen = 0, 0, 0, _DigestSet()
        with (temporary / "cleaned.csv").open("wb") as out:
            line = io.StringIO()
            csv.writer(line, lineterminator="\n").writerow(names)
            out.write(line.getvalue().encode("utf-8"))
            for part in parts:
                index = part["index"]
                stats = json.loads(_part(work, index, "json").read_text(encoding="utf-8"))
                rows_in += stats["rows_in"]
                types = [_join(a, b) for a, b in zip(types, stats["types"], strict=True)]
                missing = [a + b for a, b in zip(missing, stats["missing"], strict=True)]
                for known, found in zip(distinct, stats["distinct"], strict=True):
                    more = [*found["values"], *map(bytes.fromhex, found["digests"])]
                    for value in more:
                        if len(known) >= _DISTINCT_CAP:
                            break
                        known.add(value)
                with (
                    _part(work, index, "csv").open("rb") as rows,
                    _part(work, index, "digests").open("rb") as digests,
                ):
                    for row in rows:  # a cleaned value holds no line break: a row a line
                        consumed += len(row)
                        if seen.add(digests.read(_DIGEST)):
                            out.write(row)
                            rows_out += 1
                        else:  # an earlier part kept it: its missing values count once
                            values = next(csv.reader([row.decode("utf-8")]))
                            missing = [m - (not v) for m, v in zip(missing, values, strict=True)]
                        if consumed >= progress.mark:
                            progress.tick(consumed)
        stats_of = zip(names, types, missing, distinct, strict=True)
        columns = [ColumnSummary(n, kind, gone, len(seen)) for n, kind, gone, seen in stats_of]
        summary = CleanSummary(
            rows_in,
            rows_out,
            rows_in - rows_out,
            header["delimiter"],
            header["encoding"],
            header["had_bom"],
            columns,
        )
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
    shutil.rmtree(work, ignore_errors=True)
    progress.report(1.0, "done", check=False)
    return summary
