"""`rnj report`: the terminal page, the self-contained HTML file, and that file rendered by headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SECTIONS = ("Ledgers", "Dedup rounds and example clusters", "Grading: documents per domain and tier",
            "Tokenizer: bytes per token", "Mixture per phase: target vs achieved", "Packing efficiency",
            "Documents per phase: lengths and difficulty order", "Training curves")
IMAGES = ("documents per job", "documents dropped per round and clusters by size", "documents per domain, by tier",
          "difficulty score distribution per domain", "bytes per token by domain",
          "target vs achieved weight per bucket", "padding and cut documents per phase",
          "sequences by padding tokens per phase", "document lengths per phase",
          "difficulty through each easy_to_hard phase", "loss and learning rate")
PLOTS = len(IMAGES)
TABLES = 16
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def test_report_in_the_terminal(rnj, output):
    result = rnj("report", output)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for title in SECTIONS:
        assert f"== {title} ==" in out
    assert re.search(r"ingest\s+.\s+yes\s+.\s+ingest-hash\s+.\s+93\s+.\s+91\s+.\s+0\s+.\s+2", out)
    assert "invalid_utf8" in out and "near_duplicate" in out and "not_in_any_mixture" in out
    assert "code/a, code/a~1, code/a~2" in out  # an example cluster
    assert "bytes per token by domain (held-out documents)" in out
    assert "pretrain/stable (pretrain): 3 buckets" in out and "sft/chat (sft): 1 buckets" in out
    assert re.search(r"pretrain/stable\s+.\s+pretrain\s+.\s+64\s+.\s+16\s+.\s+2\s+.\s+52\s+.\s+94\.92", out)
    assert "6 steps from" in out and "held-out loss" in out
    assert "plots in" not in result.stderr
    # the panels added for issue #25: fill, lengths, difficulty, held-out tokens per bucket
    assert re.search(r"pretrain/stable\s+.\s+16\s+.\s+\d+\s+.\s+[\d.]+\s+.\s+\d+(-\d+)? tokens", out)
    assert "sequence fill: sequences by padding tokens" in out
    assert "documents trained on, by length" in out and "mean difficulty per tenth" in out
    assert re.search(r"sft/chat\s+.\s+0\.1\s+.\s+0\.15\s+.\s+0\.2", out)
    assert "difficulty scores from the model model pipeline/grading/models/tiny version 1" in out
    assert re.search(r"math\s+.\s+30\s+.\s+0\.4\d+\s+.\s+0: 6, 1: 6, 2: 6, 3: 6, 4: 6", out)
    assert re.search(r"general\s+.\s+0\.2\s+.\s+0\.1996\s+.\s+-0\.000412\s+.\s+194\s+.\s+194\s+.\s+5,000\s+.\s+10\s", out)


def test_report_without_the_newer_figures(rnj, copy):
    """A build (or grade job) from before the build recorded its figures still reports, with notes."""
    import json

    report = json.loads((copy / "build" / "report.json").read_text())
    for phase in report["phases"].values():
        for key in ("padding_per_sequence", "document_lengths", "held_out_tokens", "difficulty_by_decile"):
            phase.pop(key, None)
    (copy / "build" / "report.json").write_text(json.dumps(report))
    grade = json.loads((copy / "grade" / "report.json").read_text())
    del grade["difficulty"]
    (copy / "grade" / "report.json").write_text(json.dumps(grade))
    result = rnj("report", copy)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "no sequence-fill histogram for pretrain/stable, sft/chat (built before the build job recorded it)" in out
    assert "no document-length histogram for pretrain/stable, sft/chat" in out
    assert "no difficulty distribution in the grade report" in out
    assert "no easy_to_hard phase with a recorded difficulty order" in out


def test_report_from_a_build_file(rnj, output, tmp_path):
    config = tmp_path / "build.toml"
    config.write_text(f'[build]\nname = "t"\noutput = "{output}"\nseed = 0\n\n'
                      '[[sources]]\nname = "fake"\nuri = "unused.jsonl"\nformat = "jsonl"\n')
    out = rnj("report", config).stdout
    assert f"rnj build report: file://{output}" in out and f"6 steps from {output}/train/metrics.jsonl" in out


def test_report_without_a_run_or_jobs(rnj, copy, tmp_path):
    shutil.rmtree(copy / "train")
    shutil.rmtree(copy / "dedup")
    out = rnj("report", copy).stdout
    assert "no training run named" in out and "the dedup job has not run" in out
    missing = rnj("report", copy, "--run", tmp_path)
    assert missing.exit_code == 2 and "no metrics.jsonl in" in missing.output
    (tmp_path / "empty").mkdir()
    nothing = rnj("report", tmp_path / "empty")
    assert nothing.exit_code == 2 and "holds none of the jobs' outputs" in nothing.output


@pytest.fixture(scope="module")
def html_report(built, tmp_path_factory) -> Path:
    from click.testing import CliRunner

    from rnj.cli import main

    page = tmp_path_factory.mktemp("html") / "report.html"
    result = CliRunner().invoke(main, ["report", str(built[0]), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert "plots inlined" in result.stderr
    return page


def test_html_is_one_self_contained_file(html_report):
    page = html_report.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert page.count('<img alt="') == PLOTS
    for title in IMAGES:
        assert f'<img alt="{title}"' in page
    assert page.count('src="data:image/png;base64,') == PLOTS
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing to fetch
    assert "<script" not in page and "<link" not in page


def chromium() -> str:
    """Debian's chromium, installed when missing and possible (root with apt-get); else the test is skipped."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "`apt-get install -y chromium` to run this test")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode:
            pytest.skip(f"installing chromium failed ({' '.join(command)}): {done.stderr[-500:]}")
    return shutil.which("chromium") or pytest.skip("chromium installed but not on PATH")


def test_html_renders_in_headless_chromium(html_report, tmp_path):
    browser = chromium()
    profile, shot = tmp_path / "profile", tmp_path / "report.png"
    url = html_report.resolve().as_uri()
    base = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in dom.stdout
    assert dom.stdout.count("<img ") == PLOTS and dom.stdout.count("<table>") == html_report.read_text().count("<table>") == TABLES
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,4000", url], capture_output=True,
                   timeout=120, check=True)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (4000, 1280, 3)
    coloured = (np.abs(image.astype(int) - image.mean(axis=2, keepdims=True)).max(axis=2) > 40).mean()
    assert (image < 128).any(axis=2).mean() > 0.01 and coloured > 0.02  # text and coloured plots, not blank
