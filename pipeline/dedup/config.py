"""`[dedup]`: which rounds run and how. Every default carries its reason; docs/dedup.md explains them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.configuration import require


@dataclass(frozen=True, kw_only=True)
class ExactConfig:
    enabled: bool = True
    """Drop documents whose normalised text equals another's (one survivor per hash)."""
    lowercase_prose: bool = True
    """Compare prose case-insensitively; code keeps its case (`Foo` and `foo` are different programs)."""


@dataclass(frozen=True, kw_only=True)
class NearConfig:
    enabled: bool = True
    """Drop near-duplicates found by MinHash LSH, one survivor per connected cluster."""
    threshold: float = 0.8
    """Jaccard similarity of shingle sets at which two documents count as near-duplicates."""
    num_perm: int = 128
    """MinHash permutations. 128 gives a Jaccard estimate with a standard error of about 0.03 near 0.8."""
    seed: int = 1
    """Seed of the permutations; with `num_perm` the same as `datasketch.MinHash(num_perm, seed)`."""
    prose_ngram: int = 5
    """Shingle size, in words, for prose (lowercased, digits mapped to 0, punctuation dropped)."""
    code_ngram: int = 5
    """Shingle size, in tokens (identifiers, numbers, single punctuation marks), for code."""
    recall_jaccard: float | None = None
    """True Jaccard at which `target_recall` is promised; None means `threshold + 0.05`."""
    target_recall: float = 0.99
    """Share of pairs at `recall_jaccard` that must share at least one band. Bands x rows are datasketch's
    optimal parameters for the threshold with the lowest false-negative weight that reaches this recall
    (0.99 at 0.85 gives 16 x 8): every false positive is verified afterwards, every false negative is a
    copy left in."""
    bands: int | None = None
    """Override the derived number of bands (with `rows`); None derives both from the threshold."""
    rows: int | None = None
    """Override the derived rows per band (with `bands`)."""
    verify: Literal["signature", "none"] = "signature"
    """`signature`: keep a candidate pair only if its estimated Jaccard reaches `verify_threshold`, so that
    one chance band collision cannot chain two different documents; `none`: trust every band collision."""
    verify_threshold: float | None = None
    """Estimated Jaccard a candidate pair needs; None means `threshold` less `verify_standard_errors`
    standard errors of the estimate at the threshold, sqrt(t (1 - t) / num_perm) (0.035 at 128)."""
    verify_standard_errors: float = 1.0
    """How many standard errors below the threshold a pair's estimate may fall and still count: fewer lose
    true pairs to estimation noise, more let pairs well below the threshold in."""
    code_domains: tuple[str, ...] = ("code", "trace")
    """Documents of these domains are shingled as code tokens; all others as prose words."""
    numeric_domains: tuple[str, ...] = ("math",)
    """Prose of these domains keeps its digits: two maths problems that differ only in their numbers are
    different problems, while elsewhere differing numbers (dates, versions, counters) mark copies."""
    min_shingles: int = 1
    """Documents with fewer shingles take no part in near-duplicate search (exact still applies)."""
    max_bucket_size: int = 10_000
    """A band bucket with more members (a template shared by millions of pages) is split into sub-buckets
    of about this many, each linked to the bucket through its smallest id: the pairs stay n - 1 and no
    task receives the whole bucket. Split buckets are listed in the report."""
    driver_max_edges: int = 2_000_000
    """Verified pairs up to this many are clustered on the driver (scipy's connected components, one
    Spark job); more are clustered by distributed large-star/small-star rounds with reliable checkpoints."""
    driver_max_members: int = 500_000
    """Clusters clustered on the driver whose members number up to this many are judged there too (their
    signatures fetched in one Spark job: 256 MB at 128 permutations), with the same functions and outcome
    as the distributed judging, which takes over beyond (or when a cluster would be sampled)."""

    def __post_init__(self) -> None:
        require(0 < self.threshold < 1, "near.threshold must lie strictly between 0 and 1")
        require(2 <= self.num_perm <= 1024, "near.num_perm must lie in [2, 1024]")
        require(self.prose_ngram >= 1 and self.code_ngram >= 1, "near n-gram sizes must be at least 1")
        require(self.recall_jaccard is None or self.threshold <= self.recall_jaccard <= 1,
                "near.recall_jaccard must lie in [threshold, 1]")
        require(0 < self.target_recall < 1, "near.target_recall must lie strictly between 0 and 1")
        require(self.verify_standard_errors >= 0, "near.verify_standard_errors must be >= 0")
        require((self.bands is None) == (self.rows is None), "set both near.bands and near.rows, or neither")
        if self.bands is not None and self.rows is not None:
            require(self.bands >= 1 and self.rows >= 1 and self.bands * self.rows <= self.num_perm,
                    f"near.bands x near.rows must be positive and at most num_perm ({self.num_perm})")
        require(self.verify_threshold is None or 0 < self.verify_threshold <= 1,
                "near.verify_threshold must lie in (0, 1]")
        require(self.min_shingles >= 1, "near.min_shingles must be at least 1")
        require(self.max_bucket_size >= 2, "near.max_bucket_size must be at least 2")
        require(self.driver_max_edges >= 0, "near.driver_max_edges must be >= 0")
        require(self.driver_max_members >= 0, "near.driver_max_members must be >= 0")

    @property
    def effective_recall_jaccard(self) -> float:
        return self.recall_jaccard if self.recall_jaccard is not None else min(1.0, self.threshold + 0.05)

    @property
    def verify_margin(self) -> float:
        """`verify_standard_errors` standard errors of a MinHash estimate at the threshold."""
        return self.verify_standard_errors * (self.threshold * (1 - self.threshold) / self.num_perm) ** 0.5

    @property
    def effective_verify_threshold(self) -> float:
        if self.verify_threshold is not None:
            return self.verify_threshold
        return max(0.0, self.threshold - self.verify_margin)


@dataclass(frozen=True, kw_only=True)
class SurvivorConfig:
    rule: Literal["best", "central", "longest", "smallest_id"] = "best"
    """Which member of a cluster is kept. `best`: highest quality signal (when the input carries one),
    then the most central member (highest mean estimated Jaccard to the others: the original that edited
    copies surround, not the most edited copy), then the longest, then the smallest id; `central`: the same
    without quality; `longest`: longest, then smallest id; `smallest_id`. Exact copies have equal
    centrality, so there it is quality, then length, then id."""
    max_exact_members: int = 2000
    """Members of one near-duplicate cluster whose centrality is computed exactly; a larger cluster (a
    template with millions of copies) is judged on a deterministic sample of about this many, so no task
    ever holds a whole giant cluster."""
    quality_field: str = "quality"
    """Column (or meta key) holding a numeric quality signal; ignored where absent or not a number."""


@dataclass(frozen=True, kw_only=True)
class BoilerplateConfig:
    enabled: bool = True
    """Remove lines that occur in too many distinct documents (licence headers, navigation, banners)."""
    max_documents_per_million: float = 100.0
    """A line in more than this many distinct surviving documents per million is boilerplate (0.01%: at
    25 billion documents, 2.5 million). A rate, not a count: the same count is a template in a thousand
    documents and a common sentence in a billion."""
    min_documents: int = 20
    """The rate never goes below this many documents: on a small corpus twenty distinct documents
    (near-duplicates already merged) repeating a line verbatim is a template, not content."""
    min_line_chars: int = 20
    """Lines shorter than this (after stripping) are never boilerplate: `else:`, `return x`, `Returns`
    and `----` recur everywhere because they are grammar, not templates."""
    code_comment_lines_only: bool = True
    """In code, only comment lines (#, //, /*, *) can be boilerplate: a repeated statement is code."""
    min_chars_after: int = 50
    """A document left shorter than this after removal is dropped as `boilerplate_too_short`."""
    report_top: int = 20
    """How many of the most frequent removed lines the report lists."""

    def __post_init__(self) -> None:
        require(self.max_documents_per_million > 0, "boilerplate.max_documents_per_million must be positive")
        require(self.min_documents >= 1, "boilerplate.min_documents must be at least 1")
        require(self.min_line_chars >= 1, "boilerplate.min_line_chars must be at least 1")
        require(self.min_chars_after >= 0, "boilerplate.min_chars_after must be >= 0")


@dataclass(frozen=True, kw_only=True)
class DecontaminateConfig:
    enabled: bool = True
    """Check every document against the evaluation sets (a no-op when `eval_paths` is empty)."""
    eval_paths: tuple[str, ...] = ()
    """JSONL files (plain, .gz or .zst) of evaluation items; relative paths resolve against the build file."""
    text_field: str = "text"
    """Field of each evaluation record that holds its text."""
    ngram: int = 10
    """Overlap unit, in words once names are set aside (docs/dedup.md): long enough that unrelated text
    never shares one by chance, short enough to fit between a renamed copy's changes."""
    min_ngrams: int = 5
    """A document contains an item when it holds this many of the item's evidence n-grams (all of them if
    the item has fewer): 14 words in a row, which a pasted prompt, a partial copy or a renamed copy keeps
    (an n-gram that k items share counts 1/k)..."""
    min_item_fraction: float = 0.5
    """...or this share of all the item's n-grams, evidence or not, and `min_ngrams` at least: a copy of a
    generated problem made of template words and small numbers, where no single n-gram is evidence; 0
    turns this second rule off."""
    min_content_words: int = 1
    """An n-gram is evidence only when it holds this many content words: not Python keywords, builtins,
    common methods, English function words or single characters, the idioms every program shares."""
    common_word_share: float = 0.05
    """A word found in this share of the evaluation items is no content word either (a template's words,
    a code set's usual names), unless fewer than `template_items` items hold it."""
    template_items: int = 3
    """An n-gram found in this many evaluation items or more is a template's stock phrase (generated
    problems share them), not evidence of any one item."""
    code_min_word_fraction: float = 0.15
    """For a code item (one with a `def` or `class` line), the word rule also needs this share of the item's
    evidence n-grams: a prompt-only copy holds a signature and a whole docstring, a file that shares one
    docstring paragraph or argument description with the item holds a few n-grams of many..."""
    code_min_prompt_fraction: float = 0.5
    """...or this share of the evidence n-grams of its prompt (its signature and docstring): a prompt-only
    copy of a long function holds a small share of the whole item but all of its prompt, a shared docstring
    paragraph a small share of either; above 1, off."""
    code_ngram: int = 24
    """Second signal, for code items only: n-grams of this many shape tokens (`code_tokens`: names one
    placeholder, keywords, attributes, literals and operators themselves, layout ignored), which a renamed
    and reformatted copy keeps; 0 turns the signal off."""
    code_min_ngrams: int = 8
    """A document contains a code item when it holds this many of the item's shape n-grams (an n-gram of
    `template_items` items or more is an idiom: no evidence)..."""
    code_min_fraction: float = 0.35
    """...and this share of them at least."""
    action: Literal["drop", "remove_span"] = "drop"
    """`drop`: drop a matching document (`contaminated`); `remove_span`: cut the matching words out and
    keep the rest (dropped as `contaminated` only if less than `min_chars_after` remains)."""
    min_chars_after: int = 50
    """With `remove_span`, a document left shorter than this is dropped."""

    def __post_init__(self) -> None:
        require(self.ngram >= 1, "decontaminate.ngram must be at least 1")
        require(0 <= self.min_item_fraction <= 1, "decontaminate.min_item_fraction must lie in [0, 1]")
        require(self.min_ngrams >= 1, "decontaminate.min_ngrams must be at least 1")
        require(0 <= self.min_content_words <= self.ngram,
                "decontaminate.min_content_words must lie between 0 and decontaminate.ngram")
        require(0 < self.common_word_share <= 1, "decontaminate.common_word_share must lie in (0, 1]")
        require(self.template_items >= 2, "decontaminate.template_items must be at least 2")
        require(0 <= self.code_min_word_fraction <= 1, "decontaminate.code_min_word_fraction must lie in [0, 1]")
        require(self.code_min_prompt_fraction >= 0,
                "decontaminate.code_min_prompt_fraction must be 0 or more (above 1 turns it off)")
        require(self.code_ngram >= 0, "decontaminate.code_ngram must be 0 (off) or more")
        require(self.code_min_ngrams >= 1, "decontaminate.code_min_ngrams must be at least 1")
        require(0 <= self.code_min_fraction <= 1, "decontaminate.code_min_fraction must lie in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    enabled: bool = True
    """Run the dedup job at all; when false the job passes every document through."""
    exact: ExactConfig = field(default_factory=ExactConfig)
    """Round 1: exact duplicates of the normalised text."""
    near: NearConfig = field(default_factory=NearConfig)
    """Round 2: MinHash-LSH near-duplicates."""
    survivor: SurvivorConfig = field(default_factory=SurvivorConfig)
    """Which member of an exact or near-duplicate cluster is kept."""
    boilerplate: BoilerplateConfig = field(default_factory=BoilerplateConfig)
    """Round 3: lines repeated across many documents."""
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    """Round 4: overlap with evaluation sets."""
    sample_clusters: int = 10
    """How many of the largest clusters per round the report shows with their member ids."""
    driver_max_documents: int = 1_000_000
    """Up to this many input documents (laid out by id, as the jobs write them), the job runs its driver
    plan: one Spark pass computes the features, the driver runs the exact and near rounds on them in
    memory, one more pass rewrites the survivors; the same outputs, byte for byte, as the distributed
    plan's some sixty Spark jobs. The features take about 850 bytes a document (a 512-byte signature at
    128 permutations): 1,000,000 documents are about 0.85 GB of features, and the driver peaked at 2.2 GB
    on a 1,000,000-document worst case (docs/dedup.md, "Plans"): within a 4 GB driver. 0 always runs the
    distributed plan."""

    def __post_init__(self) -> None:
        require(self.driver_max_documents >= 0, "dedup.driver_max_documents must be >= 0 (0 turns the driver plan off)")
