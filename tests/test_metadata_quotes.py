"""A metadata file's rows read as upstream's prepare_csv_wavs reads them (Python's csv, delimiter |), quotes
included; the preparation report names each row whose quotes changed its text; the metadata.csv this tool
writes reads back exactly, by this tool and by upstream."""
import json

import pytest

from finetune.recordings import read_metadata, write_metadata
from finetune.sources import format_row, read_rows, split_rows
from bench.makers import write_clips
from tests.test_runs_data import prepare

TEXTS = [
    '"Hello," she said.',  # a quoted start: upstream drops the quotes and keeps what follows
    'He said "hi" twice.',  # quotes inside an unquoted field are text
    '"A | B, and ""C"""',  # a quoted field: | inside it, "" for one quote
    '"Quoted whole."',
    "  Plain text, spaced.  ",
]


def upstream_pairs(meta):
    from f5_tts.train.datasets.prepare_csv_wavs import read_audio_text_pairs

    return read_audio_text_pairs(str(meta))


@pytest.fixture(scope="module")
def quoted(tmp_path_factory):
    root = tmp_path_factory.mktemp("quoted")
    rows = write_clips(root / "src", len(TEXTS) + 1, seed=11, min_s=2.0, max_s=3.0)
    lines = ["audio_file|text"] + [f"{a}|{t}" for (a, _), t in zip(rows, TEXTS)] + [f'"{rows[-1][0]}"|A quoted path.']
    meta = root / "metadata.csv"
    meta.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")  # a BOM and CRLF, as spreadsheets write
    return meta


def test_rows_read_as_upstreams_reader_reads_them(quoted):
    _, rows, _ = read_rows(quoted)
    expected = upstream_pairs(quoted)
    assert [(r.audio.as_posix(), r.text) for r in rows] == expected
    assert [t for _, t in expected[:5]] == ["Hello, she said.", 'He said "hi" twice.', 'A | B, and "C"',
                                            "Quoted whole.", "Plain text, spaced."]


def test_the_report_names_each_row_whose_quotes_changed_its_text(quoted, tmp_path):
    out = prepare(quoted, tmp_path / "ds")
    report = (out / "report.txt").read_text(encoding="utf-8").splitlines()
    notes = {int(line.split(":")[1]): line for line in report if ": quoted: " in line}
    assert sorted(notes) == [2, 5, 7]  # row 4 is quoted as a CSV writer quotes it: read as meant, no note
    assert "text '\"Hello,\" she said.' reads as 'Hello, she said.'" in notes[2]
    assert "'\"\"\"Hello,\"\" she said.\"'" in notes[2]  # how to keep the quotes
    assert f"audio '\"{upstream_pairs(quoted)[5][0]}\"' reads as" in notes[7] and "keep its quotes" not in notes[7]
    ds = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert ds["summary"]["clips"] == len(TEXTS) + 1 and ds["summary"]["rows_skipped"] == {}  # notes, not skips
    assert [c["text"] for c in ds["clips"]] == [t for _, t in upstream_pairs(quoted)]


def test_a_quote_closed_lines_later_joins_them_as_upstream_does_and_is_reported(tmp_path):
    (a, _), (b, _), (c, _) = write_clips(tmp_path / "src", 3, seed=12, min_s=2.0, max_s=3.0)
    meta = tmp_path / "m.csv"
    meta.write_text(f'audio_file|text\n{a}|"Opened here.\n{b}|Closed" there.\n{c}|Fine.\n', encoding="utf-8")
    records, _ = split_rows(meta.read_bytes())
    assert [r.fields for r in records[1:]] == [[str(p), t] for p, t in upstream_pairs(meta)]
    assert records[1].fields[1] == f"Opened here.\n{b}|Closed there." and (records[1].line, records[1].end) == (2, 3)
    assert records[2].line == 4
    _, rows, problems = read_rows(meta)
    assert [(r.where, r.text) for r in rows] == [("m.csv:4", "Fine.")]  # the joined text holds a line break
    assert [(p.where, p.kind) for p in problems if p.kind != "header"] == [("m.csv:2", "quoted"),
                                                                           ("m.csv:2", "control_char")]
    assert "runs to line 3" in problems[1].detail


def test_ljspeech_rows_keep_their_quotes_as_upstreams_ljspeech_reader(tmp_path):
    (a, _), = write_clips(tmp_path / "lj", 1, seed=13)
    (tmp_path / "lj" / "metadata.csv").write_text(f'{a.stem}|"Raw," text|"Normal," text\n', encoding="utf-8")
    _, rows, problems = read_rows(tmp_path / "lj")
    assert [r.text for r in rows] == ['"Normal," text'] and not problems


@pytest.mark.parametrize("text", ['"Hello," she said.', 'plain "mid" quotes', "a | b", '"', '""', "x\"", "plain"])
def test_the_metadata_this_tool_writes_reads_back_exactly(tmp_path, text):
    (a, _), = write_clips(tmp_path / "src", 1, seed=14)
    meta = tmp_path / "metadata.csv"
    write_metadata(meta, [(str(a), text)])
    assert read_metadata(meta) == {str(a): text}
    assert upstream_pairs(meta) == [(str(a), text)]
    assert [r.text for r in read_rows(meta)[1]] == [text]
    line = meta.read_text(encoding="utf-8").splitlines()[1]
    assert line == (f"{a}|{text}" if not text.startswith('"') and "|" not in text else format_row([str(a), text]))
