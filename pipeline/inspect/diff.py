"""Two builds' (or two phases') manifests side by side (`rnj shards diff A B`).

Phases are paired by STAGE/PHASE (a single phase against a single phase is paired whatever its name). For
each pair: the settings that must match for a run to resume (tokenizer, vocabulary, seq_len, build hash),
the totals, and the mixture: each bucket's target and achieved weight in A and B and the shift, plus tokens
by domain, tier and source.

Whether two phases are the same is decided by their content: the sha256 of every shard (train and eval),
the sequence counts and the mixture. The configuration hashes (`build_hash`, `input_hash`) are reported on
their own: a change in them alone (a setting that did not change these shards, the same data built from
another path) leaves the phases "same content".
"""

from __future__ import annotations

from pipeline.inspect.tables import Table

SETTINGS = ("kind", "seq_len", "vocab_size", "tokenizer_sha256", "build_hash", "input_hash", "seed", "loss_mask",
            "global_batch_tokens", "sequences_per_step", "steps", "first_step")
"""Compared as they are; a change in the first five means another tokenizer, sequence length or curriculum."""
BREAKING = ("seq_len", "vocab_size", "tokenizer_sha256")
CONFIGURATION_HASHES = ("build_hash", "input_hash")


def _short(value):
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "..."
    return value


def _delta(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return round(b - a, 6)
    return None


def _totals(manifest: dict) -> dict:
    n, slots = manifest["num_sequences"], manifest["num_tokens"]
    padding = manifest["num_padding_tokens"]
    return {"sequences": n, "token slots": slots, "padding tokens": padding,
            "non-padding share": round(1 - padding / slots, 6) if slots else None,
            "shards": len(manifest["shards"]), "eval sequences": manifest.get("eval", {}).get("num_sequences"),
            "cut documents": (manifest.get("packing") or {}).get("cut")}


def diff_phases(a: dict, b: dict) -> tuple[list[Table], list[str]]:
    """(tables, headline changes) for two manifests."""
    name = f"{a['stage']}/{a['phase']}" + ("" if (a["stage"], a["phase"]) == (b["stage"], b["phase"])
                                           else f" vs {b['stage']}/{b['phase']}")
    headlines = []
    rows = []
    for key in SETTINGS:
        va, vb = a.get(key), b.get(key)
        rows.append([key, _short(va), _short(vb), "changed" if va != vb else ""])
        if va != vb and key in BREAKING:
            headlines.append(f"{name}: {key} changed ({_short(va)} -> {_short(vb)}): a run cannot resume across it")
    content = content_differences(a, b)
    hashes = [k for k in CONFIGURATION_HASHES if a.get(k) != b.get(k)]
    if content:
        headlines.append(f"{name}: content differs ({', '.join(content)})")
        if "build_hash" in hashes:
            headlines.append(f"{name}: build_hash changed: the phase's parameters or the seed differ")
    elif hashes:
        headlines.append(f"{name}: same content (every shard's sha256, the sequences and the mixture match); "
                         f"only the configuration hash differs ({', '.join(hashes)})")
    settings = Table(f"{name}: settings", ["key", "A", "B", ""], rows)
    ta, tb = _totals(a), _totals(b)
    totals = Table(f"{name}: totals", ["figure", "A", "B", "B - A"],
                   [[k, ta[k], tb[k], _delta(ta[k], tb[k])] for k in ta])
    tables = [settings, totals, _mixture(name, a, b)]
    for key in ("tokens_by_domain", "tokens_by_tier", "tokens_by_source"):
        tables.append(_counts(name, key, a.get(key) or {}, b.get(key) or {}))
    shifted = [r for r in tables[2].rows if r[5] is not None and abs(r[5]) >= 0.01]
    for r in shifted:
        headlines.append(f"{name}: bucket {r[0]} achieved weight moved {r[5]:+.4f} ({r[2]} -> {r[4]})")
    return tables, headlines


def _mixture(name: str, a: dict, b: dict) -> Table:
    ba = (a.get("mixture") or {}).get("buckets", {})
    bb = (b.get("mixture") or {}).get("buckets", {})
    rows = []
    for key in sorted(set(ba) | set(bb)):
        ea, eb = ba.get(key, {}), bb.get(key, {})
        wa, wb = ea.get("achieved_weight"), eb.get("achieved_weight")
        rows.append([key, ea.get("target_weight"), wa, eb.get("target_weight"), wb,
                     _delta(wa or 0.0, wb or 0.0) if (wa is not None or wb is not None) else None,
                     ea.get("tokens"), eb.get("tokens")])
    return Table(f"{name}: mixture (achieved weight shift B - A)",
                 ["bucket", "target A", "achieved A", "target B", "achieved B", "shift", "tokens A", "tokens B"], rows)


def _counts(name: str, key: str, a: dict, b: dict) -> Table:
    total_a, total_b = sum(a.values()), sum(b.values())
    rows = []
    for label in sorted(set(a) | set(b), key=str):
        sa = a.get(label, 0) / total_a if total_a else 0.0
        sb = b.get(label, 0) / total_b if total_b else 0.0
        rows.append([label, a.get(label, 0), b.get(label, 0), round(sa, 6), round(sb, 6), round(sb - sa, 6)])
    return Table(f"{name}: {key.replace('_', ' ')}", [key.split("_")[-1], "A", "B", "share A", "share B", "shift"],
                 rows)


def diff_builds(a: dict[str, dict], b: dict[str, dict]) -> tuple[list[Table], list[str]]:
    """Manifests keyed by STAGE/PHASE: pairs compared, phases present on one side listed."""
    if len(a) == 1 and len(b) == 1:
        return diff_phases(next(iter(a.values())), next(iter(b.values())))
    rows = []
    for name in list(a) + [n for n in b if n not in a]:
        ma, mb = a.get(name), b.get(name)
        rows.append([name, ma["num_sequences"] if ma else None, mb["num_sequences"] if mb else None,
                     "only in A" if mb is None else "only in B" if ma is None else _status(ma, mb)])
    tables, headlines = [Table("phases", ["phase", "sequences A", "sequences B", ""], rows)], []
    headlines += [f"{r[0]}: {r[3]}" for r in rows if r[3].startswith("only")]
    for name, manifest in a.items():
        if name in b and _status(manifest, b[name]) != "same":
            more, lines = diff_phases(manifest, b[name])
            tables += more
            headlines += lines
    return tables, headlines


def _shards(manifest: dict) -> list[tuple[str, int, str]]:
    entries = manifest["shards"] + (manifest.get("eval") or {}).get("shards", [])
    return [(e["path"], e["num_sequences"], e["sha256"]) for e in entries]


def content_differences(a: dict, b: dict) -> list[str]:
    """What differs in what two phases hold (empty when they are the same data): shard files and hashes,
    sequence counts, mixture, token counts, and the settings that shape every sequence."""
    found = []
    shards_a, shards_b = _shards(a), _shards(b)
    if shards_a != shards_b:
        changed = sum(1 for x, y in zip(shards_a, shards_b) if x != y) + abs(len(shards_a) - len(shards_b))
        found.append(f"{changed} of {max(len(shards_a), len(shards_b))} shards' sha256")
    if (a["num_sequences"], (a.get("eval") or {}).get("num_sequences")) != (
            b["num_sequences"], (b.get("eval") or {}).get("num_sequences")):
        found.append("sequence counts")
    if (a.get("mixture") or {}).get("buckets") != (b.get("mixture") or {}).get("buckets"):
        found.append("mixture")
    found += [key.replace("_", " ") for key in ("tokens_by_domain", "tokens_by_tier", "tokens_by_source")
              if a.get(key) != b.get(key)]
    found += [key for key in SETTINGS if key not in CONFIGURATION_HASHES and a.get(key) != b.get(key)]
    return found


def _status(a: dict, b: dict) -> str:
    if content_differences(a, b):
        return "differs"
    if any(a.get(k) != b.get(k) for k in CONFIGURATION_HASHES):
        return "same content, configuration hash differs"
    return "same"
