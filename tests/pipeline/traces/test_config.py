"""`[traces]` parsing: defaults, relative URIs, validation messages."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, parse_build
from pipeline.traces.config import TracesConfig

BASE = '[build]\nname = "t"\noutput = "out"\n\n[[sources]]\nname = "s"\nuri = "s.jsonl"\nformat = "jsonl"\n'


def test_defaults_and_relative_uris():
    cfg = parse_build(BASE + '[traces]\nenabled = true\nunits_uris = ["u/*.jsonl", "gs://b/x.jsonl"]\n'
                      'script_uris = ["scripts"]\n', "/builds/demo.toml")
    assert cfg.traces.units_uris == ("/builds/u/*.jsonl", "gs://b/x.jsonl")
    assert cfg.traces.script_uris == ("/builds/scripts",)
    assert cfg.traces.sandbox == "auto" and cfg.traces.doctests and cfg.traces.seed == 0
    assert not TracesConfig().enabled


@pytest.mark.parametrize("line, message", [
    ("workers = 0", "workers must be at least 1"),
    ("memory_mb = 16", "memory_mb must be at least 64"),
    ('sandbox = "docker"', "must be one of"),
    ("max_steps = 0", "max_steps >= 1"),
])
def test_invalid_values_are_refused(line, message):
    with pytest.raises(ConfigError, match=message):
        parse_build(BASE + f"[traces]\n{line}\n", "/b.toml")
