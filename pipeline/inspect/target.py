"""What a URI given to `rnj shards ...` names, on any fsspec filesystem.

Accepted, from the top down (OUTPUT is `[build] output`):

    OUTPUT                       every phase of OUTPUT/build, in training order (curriculum.json)
    OUTPUT/build                 the same
    OUTPUT/build/STAGE           that stage's phases
    OUTPUT/build/STAGE/PHASE     one phase (a folder with manifest.json)
    .../PHASE/train-00003.arrow  one shard of a phase (it must be listed in the phase's manifest)
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import fsspec

from pipeline.shards import MANIFEST, ShardError, read_manifest

CURRICULUM = "curriculum.json"
BUILD_JOB = "build"


class InspectError(ShardError):
    """A URI that names nothing inspectable; the message says what was found and what to point at."""


@dataclass(frozen=True)
class Target:
    uri: str
    """The URI as given."""
    kind: str
    """`build` (a build output or the build job's folder), `stage`, `phase` or `shard`."""
    phases: tuple[str, ...]
    """URIs of the phase folders it covers, in training order."""
    shard: str | None = None
    """For `shard`: the file's name inside its phase."""
    output_root: str | None = None
    """OUTPUT (the folder holding ingest/, tokenize/, build/ ...) when the layout shows it, else None."""

    def split_of(self, manifest: dict) -> str | None:
        """For a shard target: `train` or `eval`, whichever list of the manifest names it."""
        if self.shard is None:
            return None
        if any(e["path"] == self.shard for e in manifest.get("eval", {}).get("shards", [])):
            return "eval"
        return "train"


def resolve_target(uri: str) -> Target:
    """What `uri` names; InspectError (with what to do) when it is missing or holds no build or manifest."""
    fs, path = fsspec.core.url_to_fs(uri)
    path = path.rstrip("/") or "/"
    if not fs.exists(path):
        raise InspectError(f"{uri} does not exist")
    if not fs.isdir(path):
        return _shard_target(uri, fs, path)
    if fs.exists(posixpath.join(path, MANIFEST)):
        read_manifest(fs.unstrip_protocol(path))  # refuses newer versions and incomplete manifests up front
        return Target(uri, "phase", (fs.unstrip_protocol(path),), output_root=_output_root(fs, path, 3))
    if fs.exists(posixpath.join(path, CURRICULUM)):
        return Target(uri, "build", _phases_of(fs, path), output_root=_output_root(fs, path, 1))
    if fs.exists(posixpath.join(path, BUILD_JOB, CURRICULUM)):
        build = posixpath.join(path, BUILD_JOB)
        return Target(uri, "build", _phases_of(fs, build), output_root=fs.unstrip_protocol(path))
    children = sorted(p.rstrip("/") for p in fs.ls(path, detail=False) if fs.isdir(p))
    phases = [c for c in children if fs.exists(posixpath.join(c, MANIFEST))]
    if phases:
        order = _curriculum_order(fs, posixpath.dirname(path))
        phases.sort(key=lambda p: order.get(posixpath.basename(p), len(order)))
        return Target(uri, "stage", tuple(fs.unstrip_protocol(p) for p in phases),
                      output_root=_output_root(fs, path, 2))
    shards = [p for p in fs.ls(path, detail=False) if p.endswith(".arrow")]
    if shards:
        raise InspectError(f"{uri} holds {len(shards)} shard files but no {MANIFEST}: the build did not finish "
                           "writing this phase (the manifest is written last) or the manifest was removed; "
                           "rebuild the phase (rnj run CONFIG --only build --force)")
    raise InspectError(f"{uri} holds no {MANIFEST} (not a built phase) and no {CURRICULUM} (not a build): point "
                       "at OUTPUT, OUTPUT/build, OUTPUT/build/STAGE or OUTPUT/build/STAGE/PHASE")


def _shard_target(uri: str, fs, path: str) -> Target:
    name, folder = posixpath.basename(path), posixpath.dirname(path)
    folder_uri = fs.unstrip_protocol(folder)
    if name == MANIFEST:
        read_manifest(folder_uri)
        return Target(uri, "phase", (folder_uri,), output_root=_output_root(fs, folder, 3))
    if not name.endswith(".arrow"):
        raise InspectError(f"{uri} is neither a shard (.arrow) nor a folder: point at a phase folder or a shard")
    manifest = read_manifest(folder_uri)
    listed = [e["path"] for e in manifest["shards"] + manifest.get("eval", {}).get("shards", [])]
    if name not in listed:
        raise InspectError(f"{uri}: the manifest of {manifest['stage']}/{manifest['phase']} does not list {name} "
                           f"(it lists {', '.join(listed) or 'nothing'}): a leftover of another build or a file "
                           "copied in by hand; the reader never reads it. Remove it, or rebuild the phase")
    return Target(uri, "shard", (folder_uri,), shard=name, output_root=_output_root(fs, folder, 3))


def _phases_of(fs, build: str) -> tuple[str, ...]:
    """Phase folders in curriculum.json's order (their manifests are read later, one by one)."""
    with fs.open(posixpath.join(build, CURRICULUM), "r") as f:
        order = json.load(f)["phases"]
    return tuple(fs.unstrip_protocol(posixpath.join(build, p["stage"], p["phase"])) for p in order)


def _curriculum_order(fs, build: str) -> dict[str, int]:
    path = posixpath.join(build, CURRICULUM)
    if not fs.exists(path):
        return {}
    with fs.open(path, "r") as f:
        return {p["phase"]: i for i, p in enumerate(json.load(f)["phases"])}


def _output_root(fs, path: str, levels: int) -> str | None:
    """OUTPUT, `levels` folders above `path`, when that folder's name is `build` one level down."""
    build = path
    for _ in range(levels - 1):
        build = posixpath.dirname(build)
    if posixpath.basename(build) != BUILD_JOB:
        return None
    return fs.unstrip_protocol(posixpath.dirname(build))


def phase_name(manifest: dict) -> str:
    return f"{manifest['stage']}/{manifest['phase']}"


def tokenizer_folder(target: Target) -> str | None:
    """OUTPUT/tokenize/tokenizer/ of the build the target belongs to, when it exists."""
    if target.output_root is None:
        return None
    fs, root = fsspec.core.url_to_fs(target.output_root)
    folder = posixpath.join(root, "tokenize", "tokenizer")
    return fs.unstrip_protocol(folder) if fs.exists(posixpath.join(folder, "tokenizer.json")) else None
