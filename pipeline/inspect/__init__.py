"""Looking into a build: what `rnj shards ...` and `rnj report` show, without Spark.

    target.py   what a URI names (a build output, the build job's folder, a stage, a phase, one shard)
    scan.py     a phase's sequences and document pieces as polars frames
    stats.py    mixture achieved vs target, padding, document lengths, documents per sequence, tiers
    verify.py   every problem of a phase, one line each (the reader in pipeline/shards.py stops at the first)
    diff.py     two phases' or builds' manifests side by side
    report.py   the one-page build report: ledgers, dedup, grading, tokenizer, mixture, packing, training
    html.py     the report as one self-contained HTML file (plots inlined as base64 PNG)
    plots.py    matplotlib figures as PNG bytes
    tables.py   the small table type every part returns and every renderer draws

Engine-free: nothing here imports pyspark, jobs/, model/ or rnj/. Shards are read with pipeline.shards.
docs/inspect.md is the user's guide.
"""

from pipeline.inspect.tables import Table
from pipeline.inspect.target import InspectError, Target, resolve_target

__all__ = ["InspectError", "Table", "Target", "resolve_target"]
