"""Atomic job outputs on any fsspec filesystem.

A job writes into `ROOT/_tmp/JOB-<run>/`, then commits: the ledger is checked and written, the folder is
moved to `ROOT/JOB/`, and `_SUCCESS` (holding the input hash) is written last. A folder without a matching
`_SUCCESS` is never taken as committed, so a job killed at any point leaves nothing that looks done, and a
rerun starts over. Object stores have no atomic rename; `_SUCCESS` written last is what makes it safe there.
"""

from __future__ import annotations

import json
import posixpath
import uuid

import fsspec

from pipeline.ledger import Ledger

SUCCESS = "_SUCCESS"
LEDGER = "_LEDGER.json"


class JobOutput:
    """The output folder of one job under a build's output root."""

    def __init__(self, root_uri: str, job: str):
        self.job = job
        self.fs, root = fsspec.core.url_to_fs(root_uri)
        self.root = root.rstrip("/")
        self.path = posixpath.join(self.root, job)
        self.uri = self.fs.unstrip_protocol(self.path)

    def committed_hash(self) -> str | None:
        """The input hash of the committed output, or None when there is none."""
        marker = posixpath.join(self.path, SUCCESS)
        if not self.fs.exists(marker):
            return None
        with self.fs.open(marker, "rb") as f:
            try:
                return json.loads(f.read())["input_hash"]
            except (ValueError, KeyError):
                return None

    def is_committed(self, input_hash: str) -> bool:
        return self.committed_hash() == input_hash

    def begin(self) -> str:
        """A fresh temporary folder to write into (left-overs of killed runs are removed first)."""
        tmp_root = posixpath.join(self.root, "_tmp")
        if self.fs.exists(tmp_root):
            for old in self.fs.ls(tmp_root, detail=False):
                if posixpath.basename(old.rstrip("/")).startswith(f"{self.job}-"):
                    self.fs.rm(old, recursive=True)
        tmp = posixpath.join(tmp_root, f"{self.job}-{uuid.uuid4().hex[:12]}")
        self.fs.makedirs(tmp, exist_ok=True)
        return self.fs.unstrip_protocol(tmp)

    def commit(self, tmp_uri: str, input_hash: str, ledger: Ledger) -> None:
        """Check the ledger, write it, move the temporary folder into place, then write `_SUCCESS`."""
        ledger.check()
        tmp = fsspec.core.url_to_fs(tmp_uri)[1]
        with self.fs.open(posixpath.join(tmp, LEDGER), "w") as f:
            f.write(ledger.to_json())
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)
        self.fs.mv(tmp, self.path, recursive=True)
        with self.fs.open(posixpath.join(self.path, SUCCESS), "w") as f:
            f.write(json.dumps({"job": self.job, "input_hash": input_hash}) + "\n")

    def ledger(self) -> Ledger:
        with self.fs.open(posixpath.join(self.path, LEDGER), "r") as f:
            return Ledger.from_json(f.read())

    def child(self, *parts: str) -> str:
        """URI of a path inside the committed output."""
        return self.fs.unstrip_protocol(posixpath.join(self.path, *parts))
