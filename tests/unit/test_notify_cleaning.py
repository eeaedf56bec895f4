"""clean_csv on real files: encodings, delimiters, header and value cleaning, types, broken
files with their line numbers, and publishing all three outputs or none."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from examples.notify.cleaning import (
    OUTPUTS,
    Cancelled,
    CleanSummary,
    ColumnSummary,
    CsvError,
    clean_csv,
)

MIB = 1024 * 1024


def write(tmp_path: Path, data: bytes | str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def clean(tmp_path: Path, data: bytes | str) -> tuple[CleanSummary, Path]:
    out_dir = tmp_path / "out"
    return clean_csv(write(tmp_path, data), out_dir), out_dir


def rows(out_dir: Path) -> list[dict[str, object]]:
    lines = (out_dir / "data.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def cleaned(out_dir: Path) -> str:
    return (out_dir / "cleaned.csv").read_text(encoding="utf-8")


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("."))


def many_rows(count: int) -> str:
    return "id,name,score\n" + "".join(f"{n},name {n},{n}.5\n" for n in range(count))


class TestTidyFile:
    def test_outputs(self, tmp_path: Path) -> None:
        """A tidy file comes out as it went in, typed in JSONL, summarised in summary.json."""
        summary, out_dir = clean(tmp_path, "id,name,score\n1,Ann,2.50\n2,Bob,3\n")

        assert "id,name,score\n1,Ann,2.50\n2,Bob,3\n" == cleaned(out_dir)
        assert '{"id":1,"name":"Ann","score":2.50}\n{"id":2,"name":"Bob","score":3}\n' == (
            out_dir / "data.jsonl"
        ).read_text(encoding="utf-8")
        assert (
            CleanSummary(
                rows_in=2,
                rows_out=2,
                duplicates_dropped=0,
                delimiter=",",
                encoding="utf-8",
                had_bom=False,
                columns=[
                    ColumnSummary("id", "integer", 0, 2),
                    ColumnSummary("name", "text", 0, 2),
                    ColumnSummary("score", "decimal", 0, 2),
                ],
            )
            == summary
        )
        assert summary.to_json() == json.loads((out_dir / "summary.json").read_text())
        assert sorted(OUTPUTS) == sorted(path.name for path in out_dir.iterdir())

    def test_header_only_file(self, tmp_path: Path) -> None:
        """A header without rows is valid: no rows, every column empty."""
        summary, out_dir = clean(tmp_path, "a,b\n")
        assert (0, 0) == (summary.rows_in, summary.rows_out)
        assert ["empty", "empty"] == [column.type for column in summary.columns]
        assert "a,b\n" == cleaned(out_dir)
        assert "" == (out_dir / "data.jsonl").read_text()

    def test_carriage_returns_alone_end_lines(self, tmp_path: Path) -> None:
        """Old Mac line ends (CR alone) end records, and inside quotes become spaces."""
        _, out_dir = clean(tmp_path, 'a,b\r1,"x\ry"\r3,4\r')
        assert [{"a": 1, "b": "x y"}, {"a": 3, "b": "4"}] == rows(out_dir)

    def test_last_line_without_a_line_break(self, tmp_path: Path) -> None:
        """The final row counts though no line break ends it."""
        summary, out_dir = clean(tmp_path, "a,b\r\n1,2\r\n3,4")
        assert 2 == summary.rows_out
        assert "a,b\n1,2\n3,4\n" == cleaned(out_dir)


class TestMessyFile:
    def test_bom_semicolons_whitespace_duplicates_blanks_and_missing(self, tmp_path: Path) -> None:
        """Header names are tidied and made unique, values trimmed and collapsed, missing
        markers emptied, blank lines skipped, and the row that repeats another dropped."""
        data = (
            "\ufeff First   Name ; ;Age;Age;  \r\n"
            "\r\n"
            "  Ann   Lee  ; N/A ;30; null ;x\r\n"
            "   \r\n"
            "Ann Lee;-;30;;x\r\n"
            "Bob;b;None;7;y\r\n"
            ";;;;\r\n"
        )
        summary, out_dir = clean(tmp_path, data)

        assert "First Name,column_2,Age,Age_2,column_5\nAnn Lee,,30,,x\nBob,b,,7,y\n" == cleaned(
            out_dir
        )
        assert (3, 2, 1) == (summary.rows_in, summary.rows_out, summary.duplicates_dropped)
        assert (";", "utf-8-sig", True) == (summary.delimiter, summary.encoding, summary.had_bom)
        assert [
            ColumnSummary("First Name", "text", 0, 2),
            ColumnSummary("column_2", "text", 1, 1),
            ColumnSummary("Age", "integer", 1, 1),
            ColumnSummary("Age_2", "integer", 1, 1),
            ColumnSummary("column_5", "text", 0, 2),
        ] == summary.columns
        assert {"First Name": "Bob", "column_2": "b", "Age": None, "Age_2": 7} == {
            key: value for key, value in rows(out_dir)[1].items() if key != "column_5"
        }

    def test_cp1252_with_tabs(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are read as cp1252 (0x80 is the euro sign), its undefined
        bytes as Latin-1; tabs are found as the delimiter."""
        data = "name\tcity\n Zoë \tMünchen €\n".encode("cp1252") + b"x\x81\ty\n"
        summary, out_dir = clean(tmp_path, data)
        assert ("\t", "cp1252", False) == (summary.delimiter, summary.encoding, summary.had_bom)
        assert [
            {"name": "Zoë", "city": "München €"},
            {"name": "x\x81", "city": "y"},
        ] == rows(out_dir)

    def test_non_utf8_after_the_sample(self, tmp_path: Path) -> None:
        """A cp1252 byte beyond the first 64 KiB makes the whole file read again as cp1252."""
        data = many_rows(5_000).encode() + "9999,café,1\n".encode("cp1252")
        assert len(data) > 64 * 1024
        fractions: list[float] = []
        summary = clean_csv(
            write(tmp_path, data), tmp_path / "out", on_progress=lambda f, m: fractions.append(f)
        )
        assert "cp1252" == summary.encoding
        assert {"id": 9999, "name": "café", "score": 1} == rows(tmp_path / "out")[-1]
        assert sorted(fractions) == fractions

    def test_bom_then_bytes_that_are_not_utf8(self, tmp_path: Path) -> None:
        """A BOM file with cp1252 bytes past the sample is read as cp1252 without the BOM."""
        data = "\ufeff".encode() + many_rows(5_000).encode() + "1,café,2\n".encode("cp1252")
        summary, out_dir = clean(tmp_path, data)
        assert ("cp1252", True) == (summary.encoding, summary.had_bom)
        assert ["id", "name", "score"] == [column.name for column in summary.columns]
        assert "café" == rows(out_dir)[-1]["name"]

    def test_character_cut_at_the_sample_edge(self, tmp_path: Path) -> None:
        """A UTF-8 character whose bytes straddle the 64 KiB sample's end is still UTF-8."""
        head = b"name,note\nr,"
        data = head + b"z" * (64 * 1024 - len(head) - 1) + "é\n".encode()
        assert 0xC3 == data[64 * 1024 - 1]
        summary, out_dir = clean(tmp_path, data)
        assert "utf-8" == summary.encoding
        assert str(rows(out_dir)[0]["note"]).endswith("zé")

    def test_unicode_normalised_and_line_breaks_in_quotes_collapsed(self, tmp_path: Path) -> None:
        """Values come out NFC, and a quoted value's line breaks and tabs become one space."""
        summary, out_dir = clean(tmp_path, 'k,v\ncafe\u0301,"two\n\t lines"\ncafé,x\n')
        assert [{"k": "café", "v": "two lines"}, {"k": "café", "v": "x"}] == rows(out_dir)
        assert 1 == summary.columns[0].distinct_capped


class TestDelimiters:
    @pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
    def test_each_candidate_is_found(self, tmp_path: Path, delimiter: str) -> None:
        """Each of , ; tab | is recognised from the sample."""
        data = delimiter.join("abc") + "\n" + delimiter.join("123") + "\n"
        summary, out_dir = clean(tmp_path, data)
        assert delimiter == summary.delimiter
        assert [{"a": 1, "b": 2, "c": 3}] == rows(out_dir)

    def test_decimal_commas_stay_text(self, tmp_path: Path) -> None:
        """In a ; file, 1,5 is a value, not a delimiter, and not a decimal either."""
        summary, out_dir = clean(tmp_path, "name;price\nAnn;1,5\nBob;2,25\n")
        assert ";" == summary.delimiter
        assert "text" == summary.columns[1].type
        assert "1,5" == rows(out_dir)[0]["price"]

    def test_quoted_delimiters_do_not_count(self, tmp_path: Path) -> None:
        """A quoted field holding another candidate does not sway the choice."""
        summary, out_dir = clean(tmp_path, 'a,b\n"x;y",2\n"p;q",3\n')
        assert "," == summary.delimiter
        assert "x;y" == rows(out_dir)[0]["a"]

    def test_a_few_rows_with_another_delimiter(self, tmp_path: Path) -> None:
        """The dominant delimiter wins; rows that split right with another one are read so."""
        data = "a,b,c\n1,2,3\n4;5;6\n7,8,9\n10|11|12\n"
        summary, out_dir = clean(tmp_path, data)
        assert "," == summary.delimiter
        assert [1, 4, 7, 10] == [row["a"] for row in rows(out_dir)]
        assert 4 == summary.rows_out

    def test_trailing_delimiter(self, tmp_path: Path) -> None:
        """Extra fields that are all blank, as a trailing delimiter makes, are dropped."""
        _, out_dir = clean(tmp_path, "a,b\n1,2,\n3,4,,\n")
        assert [{"a": 1, "b": 2}, {"a": 3, "b": 4}] == rows(out_dir)


class TestTypes:
    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            (["1", "-2", "0"], "integer"),
            (["0", "1", "1"], "integer"),
            (["1", "2.5", "-0.5e3", "1E5"], "decimal"),
            (["007", "8"], "text"),
            (["+1"], "text"),
            (["1.5.2"], "text"),
            (["1 000"], "text"),
            (["yes", "No", "TRUE", "false"], "boolean"),
            (["yes", "1"], "text"),
            (["2024-02-29", "2024-12-31"], "date"),
            (["2023-02-29"], "text"),
            (
                ["2024-01-01T10:00", "2024-01-01 10:00:00.5+01:00", "2024-01-01T10:00:00Z"],
                "datetime",
            ),
            (["2024-01-01", "2024-01-01T10:00"], "text"),
            (["2024-01-01T25:00"], "text"),
            (["NA", "null", "-"], "empty"),
            (["1", "x"], "text"),
        ],
    )
    def test_inferred_type(self, tmp_path: Path, values: list[str], expected: str) -> None:
        """Every non-missing value of the column decides its type."""
        summary, _ = clean(tmp_path, "v\n" + "\n".join(values) + "\n")
        assert expected == summary.columns[0].type

    def test_jsonl_values_follow_the_column_type(self, tmp_path: Path) -> None:
        """Numbers verbatim, booleans true/false, dates and text as strings, missing as null."""
        data = 'i,d,b,day,t,e\n1,2.50,Yes,2024-01-01,say "hi",NA\n-2,3,no,2024-01-02,12,\n'
        _, out_dir = clean(tmp_path, data)
        first, second = (out_dir / "data.jsonl").read_text(encoding="utf-8").splitlines()
        assert '{"i":1,"d":2.50,"b":true,"day":"2024-01-01","t":"say \\"hi\\"","e":null}' == first
        assert '{"i":-2,"d":3,"b":false,"day":"2024-01-02","t":"12","e":null}' == second

    def test_distinct_values_are_capped(self, tmp_path: Path) -> None:
        """distinct_capped stops at 10 000, counting long values as well as short ones."""
        data = "short,long\n" + "".join(f"{n},{'x' * 40}{n}\n" for n in range(10_050))
        summary, _ = clean(tmp_path, data)
        assert [10_000, 10_000] == [column.distinct_capped for column in summary.columns]


class TestBrokenFiles:
    @pytest.mark.parametrize(
        ("data", "line", "reason"),
        [
            (b"", 1, "the file is empty"),
            (b"\n  \r\n\n", 1, "the file is empty"),
            (b"a,b\n1,2\n3,\x004\n", 3, "the line holds a NUL byte; is this a binary file?"),
            (b'a,b\n1,2\n"3,4\n5,6\n', 3, "a quoted field opened here is never closed"),
            (
                b"a,b\r\n1,2\r\n\r\n1,2,3\r\n",
                4,
                "expected 2 fields (as in the header), found 3; quote values that contain ','",
            ),
            (
                b'a;b;c;d\n"x\ny";1;2;3\n1;2;3\n',
                4,
                "expected 4 fields (as in the header), found 3; quote values that contain ';'",
            ),
            (
                b"a,b\n1,2\n" + b"x" * (MIB + 10) + b"\n",
                3,
                "the line is longer than 1 MiB; is this a CSV file?",
            ),
            (
                b'a,b\n1,2\n"' + (b"x" * 1000 + b"\n") * 1100 + b'",2\n',
                3,
                "a field is longer than 1 MiB; is a quote left open?",
            ),
            (b"\xff\xfea\x00,\x00b\x00", 1, "the file is UTF-16 or UTF-32; save it as UTF-8"),
        ],
        ids=[
            "empty",
            "blank",
            "nul",
            "open-quote",
            "too-many",
            "too-few",
            "long-line",
            "long-field",
            "utf16",
        ],
    )
    def test_error_names_the_line(
        self, tmp_path: Path, data: bytes, line: int, reason: str
    ) -> None:
        """The error names the physical line and the cause; nothing is published or left."""
        with pytest.raises(CsvError) as caught:
            clean(tmp_path, data)
        assert (line, reason) == (caught.value.line, caught.value.reason)
        assert f"line {line}: {reason}" == str(caught.value)
        assert not (tmp_path / "out").exists()
        assert [] == leftovers(tmp_path)

    def test_mixed_row_that_no_delimiter_explains(self, tmp_path: Path) -> None:
        """A row that splits into the header's count with no candidate is an error."""
        with pytest.raises(CsvError, match=r"^line 3: expected 4 fields .* found 6"):
            clean(tmp_path, "a,b,c,d\n1,2,3,4\n1,2,3,4,5,6\n")


class TestPublishing:
    def test_cancel_mid_way(self, tmp_path: Path) -> None:
        """Cancelled during pass 1 leaves neither outputs nor the temporary directory."""
        asked: list[int] = []

        def should_stop() -> bool:
            asked.append(1)
            return len(asked) > 3

        with pytest.raises(Cancelled):
            clean_csv(write(tmp_path, many_rows(20_000)), tmp_path / "out", should_stop=should_stop)
        assert not (tmp_path / "out").exists()
        assert [] == leftovers(tmp_path)

    def test_failure_keeps_an_earlier_result(self, tmp_path: Path) -> None:
        """A failed run leaves the previous result in out_dir byte for byte."""
        _, out_dir = clean(tmp_path, "a,b\n1,2\n")
        before = {name: (out_dir / name).read_bytes() for name in OUTPUTS}
        with pytest.raises(CsvError):
            clean_csv(write(tmp_path, "a,b\n1,2,3\n", "bad.csv"), out_dir)
        assert before == {name: (out_dir / name).read_bytes() for name in OUTPUTS}
        assert [] == leftovers(tmp_path)

    def test_success_replaces_an_earlier_result(self, tmp_path: Path) -> None:
        """A previous result in out_dir is replaced whole by the new one."""
        _, out_dir = clean(tmp_path, "a,b\n1,2\n")
        clean_csv(write(tmp_path, "c\nx\n", "other.csv"), out_dir)
        assert "c\nx\n" == cleaned(out_dir)
        assert [] == leftovers(tmp_path)

    def test_empty_out_dir_is_used(self, tmp_path: Path) -> None:
        """An existing empty directory receives the outputs."""
        (tmp_path / "out").mkdir()
        _, out_dir = clean(tmp_path, "a\n1\n")
        assert "a\n1\n" == cleaned(out_dir)

    def test_other_content_is_refused(self, tmp_path: Path) -> None:
        """A directory holding other files is refused before any work, and kept as it was."""
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        (out_dir / "notes.txt").write_text("mine")
        with pytest.raises(FileExistsError, match=r"notes\.txt"):
            clean_csv(write(tmp_path, "a\n1\n"), out_dir)
        assert ["notes.txt"] == [path.name for path in out_dir.iterdir()]

    def test_leftovers_of_dead_runs_only_are_removed(self, tmp_path: Path) -> None:
        """A partial directory whose process is gone is removed; a live process's is kept."""
        finished = subprocess.Popen([sys.executable, "-c", "pass"])
        finished.wait()
        host = socket.gethostname()
        dead = tmp_path / f".out.partial-{host}-{finished.pid}-0000"
        live = tmp_path / f".out.partial-{host}-{os.getpid()}-0000"
        for path in (dead, live):
            path.mkdir()
            (path / "cleaned.csv").write_text("half")
        clean(tmp_path, "a\n1\n")
        assert [live.name] == leftovers(tmp_path)

    def test_same_input_same_bytes(self, tmp_path: Path) -> None:
        """Two runs over one input write byte-identical files."""
        source = write(tmp_path, many_rows(3_000) + "1,name 1,1.5\nx,é,NA\n")
        first = clean_csv(source, tmp_path / "first")
        second = clean_csv(source, tmp_path / "second")
        assert first == second
        for name in OUTPUTS:
            assert (tmp_path / "first" / name).read_bytes() == (
                tmp_path / "second" / name
            ).read_bytes()

    def test_progress_is_monotonic_and_ends_at_one(self, tmp_path: Path) -> None:
        """Fractions never go back, pass 1 stays within the first half, the last is 1.0, and
        there are at most about a hundred reports a pass."""
        calls: list[tuple[float, str]] = []
        clean_csv(
            write(tmp_path, many_rows(60_000)),
            tmp_path / "out",
            on_progress=lambda fraction, message: calls.append((fraction, message)),
        )
        fractions = [fraction for fraction, _ in calls]
        assert sorted(fractions) == fractions
        assert (1.0, "done") == calls[-1]
        assert all(f <= 0.5 for f, message in calls if "pass 1" in message)
        assert any(0.5 < f < 1.0 for f, message in calls if "pass 2" in message)
        assert len(calls) <= 205
