"""How the `rnj` command line reports a problem the user can fix: one or two lines, exit code 2.

`user_message(err)` says whether an exception is such a problem and, if so, what to print: every
`pipeline.errors.UserError` (ConfigError, MixtureError ...), shard and inspection errors, a missing file,
a storage filesystem that is not installed (with the `pip install` that adds it), a Spark path that does not
exist. Anything else is a bug and keeps its traceback. `--debug` (or RNJ_DEBUG=1) shows the traceback of
user errors too.
"""

from __future__ import annotations

import re
import sys

from pipeline.errors import UserError

EXIT_USER_ERROR = 2

STORAGE_EXTRAS = {"gcsfs": "gcs", "s3fs": "s3"}
"""Packages fsspec needs for a URI scheme -> the rnj extra that installs them."""
OWN_PACKAGES = ("pipeline", "jobs", "model", "rnj", "tokenizer", "bench")
"""A module of rnj itself that fails to import is a bug, not a missing dependency."""


def user_message(err: BaseException) -> str | None:
    """The lines to print for a user error, or None when `err` is not one (then it is a bug)."""
    if isinstance(err, UserError):
        return str(err)
    if _is(err, "pipeline.shards", "ShardError"):  # InspectError is one too
        return str(err)
    if isinstance(err, ImportError):
        return _missing_package(err)
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        where = err.filename or ""
        what = err.strerror or str(err)
        return f"{what}: {where}" if where and where not in what else what
    if type(err).__name__ == "AnalysisException" and "PATH_NOT_FOUND" in str(err):
        path = re.search(r"Path does not exist: (\S+)", str(err))
        return (f"Spark found no data at {path.group(1) if path else 'a path the job reads'}: run the job "
                "that writes it first (`rnj run CONFIG --until JOB`)")
    if isinstance(err, ValueError) and str(err).startswith("Protocol not known"):
        return f"{err}: the URI's scheme is not a storage fsspec knows (file://, gs://, s3://, memory:// ...)"
    return None


def _is(err: BaseException, module: str, name: str) -> bool:
    """isinstance(err, module.name) without importing the module (an error of it means it is loaded)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(err, getattr(loaded, name))


def _missing_package(err: ImportError) -> str | None:
    text = str(err)
    for package, extra in STORAGE_EXTRAS.items():
        if package in text or err.name == package:
            return f"{text.rstrip('.')}: pip install 'rnj[{extra}]' (or pip install {package})"
    missing = err.name or (re.search(r"No module named '([^']+)'", text) or [None, None])[1]
    if missing and isinstance(err, ModuleNotFoundError) and missing.split(".")[0] not in OWN_PACKAGES:
        return f"{text}: this command needs the package {missing.split('.')[0]!r}; install it (pip install " \
               f"{missing.split('.')[0]}) or reinstall rnj with its extras"
    return None
