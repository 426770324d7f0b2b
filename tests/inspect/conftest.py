"""A tiny complete build written once per session (tests/inspect/tiny_build.py), copied where a test damages it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.inspect.tiny_build import make_build


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(OUTPUT folder, facts) of the tiny build; never modified by tests."""
    output = tmp_path_factory.mktemp("inspect") / "out"
    return output, make_build(output)


@pytest.fixture
def output(built) -> Path:
    return built[0]


@pytest.fixture
def copy(built, tmp_path):
    """A fresh copy of the build output to damage."""
    target = tmp_path / "out"
    shutil.copytree(built[0], target)
    return target


@pytest.fixture
def rnj():
    """Invoke `rnj ARGS...` in-process; returns the click Result (stdout and stderr apart)."""
    from rnj.cli import main

    def invoke(*args: str, env: dict | None = None):
        return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke
