"""Ingest's inputs: sources are listed and checked before Spark starts; changed bytes make ingest run again;
a source that yields nothing stops the build unless it is optional."""

import os
import time
from pathlib import Path

import pytest

from pipeline.config import load_build
from pipeline.errors import UserError
from pipeline.io.listing import check_sources, listing_digest

SOURCE = """
[[sources]]
name = "{name}"
uri = "{uri}"
format = "jsonl"
{extra}
"""


def build_file(tmp_path: Path, *sources: tuple[str, str, str]) -> Path:
    text = '[build]\nname = "t"\noutput = "out"\noutput_files = 1\n'
    for name, uri, extra in sources:
        text += SOURCE.format(name=name, uri=uri, extra=extra)
    path = tmp_path / "build.toml"
    path.write_text(text)
    return path


def write_docs(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f'{{"text": "{t}"}}\n' for t in texts))


@pytest.mark.parametrize("make, uri, message", [
    (lambda d: None, "missing.jsonl", "nothing found at"),
    (lambda d: (d / "empty").mkdir(), "empty", "nothing found at"),
    (lambda d: None, "data/*.jsonl", "nothing found at"),
    (lambda d: (d / "e.jsonl").write_text(""), "e.jsonl", "every file at .* is empty"),
    (lambda d: (d / "notes.txt").write_text("x"), "notes.txt", "1 file.* at .* but none is JSON Lines"),
])
def test_a_source_that_yields_nothing_fails_naming_it(tmp_path, make, uri, message):
    make(tmp_path)
    write_docs(tmp_path / "good.jsonl", ["fine"])
    cfg = load_build(str(build_file(tmp_path, ("good", "good.jsonl", ""), ("web", uri, ""))))
    with pytest.raises(UserError, match=f"source 'web' \\({cfg.path}\\): {message}") as err:
        check_sources(cfg)
    assert "optional = true" in str(err.value) and (uri.split("/")[0] in str(err.value))


def test_an_optional_source_may_be_missing_or_empty(tmp_path):
    write_docs(tmp_path / "good.jsonl", ["fine"])
    (tmp_path / "e.jsonl").write_text("")
    cfg = load_build(str(build_file(tmp_path, ("good", "good.jsonl", ""), ("gone", "nope/*.jsonl", "optional = true"),
                                    ("blank", "e.jsonl", "optional = true"))))
    listing = check_sources(cfg)
    assert [len(listing[n]) for n in ("good", "gone", "blank")] == [1, 0, 1]


def test_the_listing_changes_with_the_bytes_under_a_name(tmp_path):
    write_docs(tmp_path / "data" / "a.jsonl", ["one", "two"])
    cfg = load_build(str(build_file(tmp_path, ("web", "data", ""))))
    before = listing_digest(check_sources(cfg))
    assert listing_digest(check_sources(cfg)) == before
    write_docs(tmp_path / "data" / "a.jsonl", ["one", "TWO"])  # same size, new modification time
    stamp = time.time() + 5
    os.utime(tmp_path / "data" / "a.jsonl", (stamp, stamp))
    assert listing_digest(check_sources(cfg)) != before


@pytest.mark.spark
def test_ingest_reruns_when_an_input_changed_and_fails_on_a_source_with_no_record(spark, tmp_path):
    from jobs import ingest

    write_docs(tmp_path / "data" / "a.jsonl", ["one", "two"])
    cfg = load_build(str(build_file(tmp_path, ("web", "data", ""))))
    assert ingest.run(spark, cfg).ledger.written == 2
    assert ingest.run(spark, cfg).skipped
    write_docs(tmp_path / "data" / "a.jsonl", ["one", "two", "three"])
    again = ingest.run(spark, cfg)
    assert not again.skipped and again.ledger.written == 3  # new bytes, same path: not "already committed"

    (tmp_path / "blank.jsonl").write_text("\n\n  \n")
    cfg = load_build(str(build_file(tmp_path, ("web", "data", ""), ("blank", "blank.jsonl", ""))))
    with pytest.raises(UserError, match="source 'blank' .*blank.jsonl hold no record"):
        ingest.run(spark, cfg)
