"""Fixtures of the deploy tests: the rendered overlays and the helpers under deploy/."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("sample", "production")
BUILD_ORDER = ("ingest", "traces", "dedup", "grade", "tokenize", "build")
"""The build's jobs in order (issue 18); jobs.registry.JOB_ORDER must be a prefix of it."""


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: it renders the kustomize overlays offline (`kubectl kustomize`)")
    return path


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Overlay name -> the objects `kubectl kustomize deploy/k8s/overlays/NAME` renders."""
    binary = kubectl()
    out = {}
    for overlay in OVERLAYS:
        result = subprocess.run([binary, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                                check=False, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
        out[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def load_deploy_module(name: str):
    """A script under deploy/ as a module (deploy/ is not a package: the image runs these as files)."""
    spec = importlib.util.spec_from_file_location(f"rnj_deploy_{name}", DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
