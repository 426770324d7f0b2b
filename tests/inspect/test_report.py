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
            "Training curves")
PLOTS = 6
"""One each: documents per job, tiers per domain, bytes per token, mixture per phase, non-padding, training."""
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
    assert missing.exit_code == 1 and "no metrics.jsonl in" in missing.output
    (tmp_path / "empty").mkdir()
    nothing = rnj("report", tmp_path / "empty")
    assert nothing.exit_code == 1 and "holds none of the jobs' outputs" in nothing.output


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
    assert dom.stdout.count("<img ") == PLOTS and dom.stdout.count("<table>") == html_report.read_text().count("<table>") == 12
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,4000", url], capture_output=True,
                   timeout=120, check=True)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (4000, 1280, 3)
    coloured = (np.abs(image.astype(int) - image.mean(axis=2, keepdims=True)).max(axis=2) > 40).mean()
    assert (image < 128).any(axis=2).mean() > 0.01 and coloured > 0.02  # text and coloured plots, not blank
