"""`[grade]`: quality filters, domain tagging, difficulty and tiers.

    [grade]                      switches and the report
    [grade.filters]              what happens to failing documents, which rules are off
    [grade.filters.prose]        Gopher / C4 / FineWeb rules for science and general prose
    [grade.filters.math]         the same rules with thresholds for worked math (short, formula-dense)
    [grade.filters.code]         The Stack / StarCoder rules for source files
    [grade.domain]               the transparent domain scorer and the optional trained classifier
    [grade.difficulty]           feature weights per grader, tiers, rare-word threshold, trace markers
    [grade.reference_model]      optional: mean token loss under a small reference checkpoint

docs/grading.md explains every rule and where its default comes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pipeline.configuration import require

GOPHER_TOP_NGRAM_MAX = {"2": 0.20, "3": 0.18, "4": 0.16}
GOPHER_DUP_NGRAM_MAX = {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}


def _fractions_ok(table: dict[str, float]) -> bool:
    return all(k.isdigit() and int(k) >= 1 and 0 <= v <= 1 for k, v in table.items())


@dataclass(frozen=True, kw_only=True)
class ProseFilterConfig:
    """Document-level rules for natural-language text (defaults: Gopher, Rae et al. 2021, appendix A;
    C4, Raffel et al. 2020; FineWeb, Penedo et al. 2024). A bound set to its loosest value switches its rule off."""

    min_words: int = 50
    """Gopher: fewer words than this fails `gopher_word_count`."""
    max_words: int = 100_000
    """Gopher: more words than this fails `gopher_word_count`."""
    min_mean_word_length: float = 3.0
    """Gopher: a mean word length (characters) below this fails `gopher_mean_word_length`."""
    max_mean_word_length: float = 10.0
    """Gopher: a mean word length above this fails `gopher_mean_word_length`."""
    max_symbol_word_ratio: float = 0.1
    """Gopher: more than this many `#` or ellipses per word fails `gopher_symbol_ratio`."""
    min_alpha_word_fraction: float = 0.8
    """Gopher: fewer words containing a letter fails `gopher_alpha_words` (formulas are masked first when
    `[grade.filters] math_aware` is on, so LaTeX does not count as symbol soup)."""
    min_stop_words: int = 2
    """Gopher: fewer distinct English stop words (the, be, to, of, and, that, have, with) fails
    `gopher_stop_words`."""
    max_bullet_line_fraction: float = 0.9
    """Gopher: more lines starting with a bullet fails `gopher_bullet_lines`."""
    max_ellipsis_line_fraction: float = 0.3
    """Gopher: more lines ending in an ellipsis fails `gopher_ellipsis_lines`."""
    max_dup_line_fraction: float = 0.3
    """Gopher repetition: more duplicated lines (as a share of lines) fails `gopher_dup_lines`."""
    max_dup_paragraph_fraction: float = 0.3
    """Gopher repetition: more duplicated paragraphs fails `gopher_dup_paragraphs`."""
    max_dup_line_char_fraction: float = 0.2
    """Gopher repetition: more characters in duplicated lines fails `gopher_dup_line_chars`."""
    max_dup_paragraph_char_fraction: float = 0.2
    """Gopher repetition: more characters in duplicated paragraphs fails `gopher_dup_paragraph_chars`."""
    max_top_ngram_fraction: dict[str, float] = field(default_factory=lambda: dict(GOPHER_TOP_NGRAM_MAX))
    """Gopher repetition, n -> bound: share of characters covered by the most frequent word n-gram;
    above it fails `gopher_top_{n}gram`."""
    max_dup_ngram_fraction: dict[str, float] = field(default_factory=lambda: dict(GOPHER_DUP_NGRAM_MAX))
    """Gopher repetition, n -> bound: share of characters inside word n-grams that occur more than once;
    above it fails `gopher_dup_{n}gram`."""
    min_line_punct_fraction: float = 0.12
    """FineWeb (after C4's terminal-punctuation rule): fewer lines ending in . ! ? " ' : or ) fails
    `fineweb_line_punct`."""
    max_short_line_fraction: float = 0.67
    """FineWeb: more lines shorter than `short_line_chars` fails `fineweb_short_lines`."""
    short_line_chars: int = 30
    """FineWeb: what a short line is (characters)."""
    max_newline_word_ratio: float = 0.3
    """FineWeb: more line breaks per word (list-like pages) fails `fineweb_list_like`."""
    lorem_ipsum: bool = True
    """C4: text containing "lorem ipsum" fails `c4_lorem_ipsum`."""

    def __post_init__(self) -> None:
        require(0 <= self.min_words <= self.max_words, "need 0 <= min_words <= max_words")
        require(0 < self.min_mean_word_length <= self.max_mean_word_length,
                "need 0 < min_mean_word_length <= max_mean_word_length")
        require(self.short_line_chars >= 1, "short_line_chars must be at least 1")
        require(_fractions_ok(self.max_top_ngram_fraction) and _fractions_ok(self.max_dup_ngram_fraction),
                "n-gram tables map a positive integer n (as a string key) to a fraction in [0, 1]")


MATH_DUP_NGRAM_MAX = {"5": 0.6, "6": 0.58, "7": 0.56, "8": 0.54, "9": 0.52, "10": 0.5}
MATH_FILTER_DEFAULTS = ProseFilterConfig(
    min_words=2, min_stop_words=0, max_short_line_fraction=1.0, min_line_punct_fraction=0.0,
    max_newline_word_ratio=0.5, max_symbol_word_ratio=0.25, max_dup_line_fraction=0.5,
    max_dup_line_char_fraction=0.4, max_top_ngram_fraction={"2": 0.4, "3": 0.4, "4": 0.4},
    max_dup_ngram_fraction=dict(MATH_DUP_NGRAM_MAX),
)
"""Worked problems are short, terse, line-structured and repeat their own phrases: Gopher's web-text bounds
dropped 37% of a sample of MATH and GSM8K *train* solutions (`gopher_dup_5gram` first in 26%: "the number of ways to",
"so the answer is" recur in every correct solution), the 10-word minimum dropped short valid problems
("Compute $\\dbinom{8}{4}$."), and GSM8K's `#### 72` answer lines failed the symbol rule. So math keeps the
rules with bounds measured on those train solutions (docs/grading.md): at least 2 words (a formula counts as
one), no stop-word, line-punctuation or short-line rule (`x = 2` on its own line is normal), up to 25% `#` per word, half the lines or 40% of the characters in
repeated lines, 40% of the characters in the top 2-4-gram and 50-60% inside repeated 5-10-grams: still far
from what boilerplate and spam reach (the whole page repeated)."""


@dataclass(frozen=True, kw_only=True)
class CodeFilterConfig:
    """File-level rules for source code (defaults: The Stack, Kocetkov et al. 2022, and the Codex/StarCoder
    filters, Li et al. 2023)."""

    max_line_length: int = 1000
    """The Stack: a line longer than this (characters) fails `stack_max_line_length` (minified, data)."""
    max_mean_line_length: float = 100.0
    """The Stack: a mean line length above this fails `stack_mean_line_length`."""
    min_alnum_fraction: float = 0.25
    """The Stack: fewer alphanumeric characters fails `stack_alnum_fraction`."""
    autogenerated_markers: tuple[str, ...] = (
        "auto-generated", "autogenerated", "automatically generated", "generated by", "do not edit",
    )
    """StarCoder: one of these (case-insensitive) in the first `autogenerated_lines` lines fails
    `starcoder_autogenerated`."""
    autogenerated_lines: int = 5
    """StarCoder: how many leading lines are searched for the markers."""
    max_data_line_fraction: float = 0.8
    """StarCoder's data-file rule for code: more lines holding only literals (numbers, strings, brackets)
    fails `starcoder_data_like` (lookup tables, embedded datasets), once the file has `data_min_lines`."""
    data_min_lines: int = 20
    """Shorter files are never judged data-like (a 3-line `__all__` is not a data file)."""
    max_encoded_run: int = 1024
    """StarCoder: a run of base64/hex characters longer than this fails `starcoder_encoded_blob`."""

    def __post_init__(self) -> None:
        require(self.max_line_length >= 1 and self.max_mean_line_length > 0, "line-length bounds must be positive")
        require(0 <= self.min_alnum_fraction <= 1, "min_alnum_fraction must lie in [0, 1]")
        require(0 <= self.max_data_line_fraction <= 1, "max_data_line_fraction must lie in [0, 1]")
        require(self.autogenerated_lines >= 0 and self.max_encoded_run >= 1, "line and run counts must be positive")


@dataclass(frozen=True, kw_only=True)
class FiltersConfig:
    enabled: bool = True
    """Apply the quality filters at all (false: every document passes, signals are still recorded)."""
    action: Literal["drop", "flag"] = "drop"
    """`drop`: a failing document leaves the corpus, its first failed rule is the ledger reason. `flag`: it
    stays, with `quality.passed = false` and the failed rules listed."""
    math_aware: bool = True
    """Mask LaTeX spans and formula runs (as one word each) before the prose rules, so that formula-dense
    math is not failed as symbol soup."""
    disabled_rules: tuple[str, ...] = ()
    """Rule names (e.g. "gopher_stop_words") that are computed and recorded but never fail a document."""
    prose: ProseFilterConfig = ProseFilterConfig()
    """Rules for science and general documents."""
    math: ProseFilterConfig = MATH_FILTER_DEFAULTS
    """Rules for math documents: the prose rules with math-aware bounds (MATH_FILTER_DEFAULTS: min_words = 2,
    no stop-word or line-punctuation minimum, looser symbol, repeated-line and n-gram bounds)."""
    code: CodeFilterConfig = CodeFilterConfig()
    """Rules for source files (traces are generated by us and are not filtered)."""


@dataclass(frozen=True, kw_only=True)
class DomainConfig:
    trusted_hints: tuple[str, ...] = ("code", "trace", "math", "science", "general")
    """Source domain hints (a source's declared `domain`) taken as they are; code after the language and
    extension checks. Hints left out of this list are confirmed or overridden by the content scorer."""
    code_line_fraction: float = 0.6
    """A document of unknown language is code when at least this share of its non-blank lines look like
    code (and it has `code_min_lines`)."""
    code_min_lines: int = 5
    """Fewer non-blank lines are never taken for code by content."""
    min_math_score: float = 3.0
    """Math score (math terms + 2 x LaTeX/formula marks, per 100 words) from which prose is math."""
    min_science_score: float = 2.0
    """Science score (science terms per 100 words) from which prose is science (when above the math score)."""
    extra_math_terms: tuple[str, ...] = ()
    """Words added to the built-in math vocabulary (lower case)."""
    extra_science_terms: tuple[str, ...] = ()
    """Words added to the built-in science vocabulary (lower case)."""
    classifier_paths: tuple[str, ...] = ()
    """Labelled JSONL files ({"text": ..., "label": "math" | "science" | "general"}) to train the linear
    classifier on; empty: the scorer alone decides."""
    classifier_buckets: int = 65_536
    """Hashed feature space of the classifier (word uni- and bigrams, crc32 into this many buckets)."""
    classifier_ngrams: int = 2
    """Longest word n-gram the classifier sees."""
    classifier_epochs: int = 300
    """Full-batch gradient steps of the softmax regression (deterministic: zero init, fixed order)."""
    classifier_learning_rate: float = 1.0
    """Step size of those steps."""
    classifier_l2: float = 1e-4
    """L2 penalty on the weights."""
    classifier_min_confidence: float = 0.6
    """Below this predicted probability the scorer decides instead."""

    def __post_init__(self) -> None:
        require(0 < self.code_line_fraction <= 1, "code_line_fraction must lie in (0, 1]")
        require(self.min_math_score > 0 and self.min_science_score > 0, "domain score thresholds must be positive")
        require(self.classifier_buckets >= 16 and self.classifier_ngrams >= 1, "classifier sizes must be positive")
        require(self.classifier_epochs >= 1 and self.classifier_learning_rate > 0, "classifier training settings must be positive")
        require(0 <= self.classifier_min_confidence <= 1, "classifier_min_confidence must lie in [0, 1]")


CODE_WEIGHTS = {
    "cyclomatic": 3.0, "max_function_complexity": 2.0, "max_nesting": 2.0, "functions": 1.0, "classes": 0.5,
    "mean_function_lines": 1.0, "recursion": 0.5, "comprehensions": 0.5, "generators": 0.5, "async": 0.5,
    "imports": 0.5, "lines": 1.0,
}
MATH_WEIGHTS = {"notation_level": 3.0, "steps": 2.0, "latex_density": 1.0, "number_magnitude": 0.5}
PROSE_WEIGHTS = {"fk_grade": 2.0, "rare_word_fraction": 2.0, "mean_sentence_words": 1.0, "technical_density": 1.0}
TRACE_WEIGHTS = {"steps": 2.0, "max_call_depth": 2.0, "calls": 1.0, "branches": 1.0, "exceptions": 1.0}


@dataclass(frozen=True, kw_only=True)
class TraceMarkers:
    """Regular expressions (Python `re`, searched per line, case-insensitive) that count what a trace shows.
    The defaults read the `pipeline/traces` format (`<|line|>`, `<|call|>` ... records, see
    pipeline/traces/format.py) and plain tracer logs ("call f", "line 3 ...", "return f"); a change of format
    is a change of these patterns in the build file."""

    start: str = r"^<\|trace\|>"
    """Lines before the first match (the source listing) are not counted; no match: every line counts."""
    step: str = r"^\s*(?:<\|line\|>|line\s+\d+\b|>>>|step\b)"
    """A line that is one executed step."""
    call: str = r"^\s*(?:<\|call\|>|call\b|calling\b)"
    """A call into a function (raises the call depth by one)."""
    ret: str = r"^\s*(?:<\|return\|>|return\b|returning\b)"
    """A return (lowers the call depth by one)."""
    branch: str = r"^\s*(?:<\|line\|>|line\b)?\s*\d*\s*(?:if|elif|else|while|for|match|case|except)\b"
    """An executed line that decides a branch or a loop."""
    exception: str = r"^\s*(?:<\|exception\|>|exception\b|raise\b|traceback\b)"
    """An exception raised or caught."""

    def __post_init__(self) -> None:
        for name in ("start", "step", "call", "ret", "branch", "exception"):
            try:
                re.compile(getattr(self, name))
            except re.error as err:
                raise ValueError(f"trace_markers.{name} is not a valid regular expression: {err}") from None


@dataclass(frozen=True, kw_only=True)
class DifficultyConfig:
    enabled: bool = True
    """Compute difficulty at all (false: difficulty 0 and tier 0 for every document)."""
    model: str = ""
    """URI of a learned difficulty model (`builtin:default`, or a folder written by `rnj grade fit`). Its
    domains get `difficulty` = the model's calibrated score and `tier` from the cut-offs stored with it, so a
    document's tier does not depend on the rest of the build. Other domains, and every domain when this is
    empty, fall back to the hand graders below (percentiles within the build)."""
    tiers: int = 5
    """Number of tiers: quantiles of the raw score within each domain (0 = easiest). With a model, its
    domains use the model's own tiers (a model stores its cut-offs; the job refuses a mismatch)."""
    code_weights: dict[str, float] = field(default_factory=lambda: dict(CODE_WEIGHTS))
    """Feature -> weight of the code grader's raw score (features: docs/grading.md)."""
    math_weights: dict[str, float] = field(default_factory=lambda: dict(MATH_WEIGHTS))
    """Feature -> weight of the math grader."""
    prose_weights: dict[str, float] = field(default_factory=lambda: dict(PROSE_WEIGHTS))
    """Feature -> weight of the science and general prose grader."""
    trace_weights: dict[str, float] = field(default_factory=lambda: dict(TRACE_WEIGHTS))
    """Feature -> weight of the trace grader."""
    rare_word_per_million: float = 20.0
    """A word is rare when the corpus (its kept science and general documents) uses it fewer times than this
    per million words (and fewer than `rare_word_min_count` times). On a large corpus at most 1e6 / this many
    words are common, which bounds the word set the job ships to its tasks."""
    rare_word_min_count: int = 2
    """A word used fewer times than this in the whole corpus is rare however small the corpus is (so that on a
    small corpus words used once still count as rare)."""
    trace_markers: TraceMarkers = TraceMarkers()
    """How trace documents are read."""

    def __post_init__(self) -> None:
        require(2 <= self.tiers <= 100, "tiers must lie in [2, 100]")
        require(self.rare_word_per_million > 0, "rare_word_per_million must be positive")
        require(self.rare_word_min_count >= 1, "rare_word_min_count must be at least 1")
        for name in ("code_weights", "math_weights", "prose_weights", "trace_weights"):
            weights = getattr(self, name)
            require(all(w >= 0 for w in weights.values()) and sum(weights.values()) > 0,
                    f"{name} must be non-negative with a positive sum")

    def weights_for(self, grader: str) -> dict[str, float]:
        return getattr(self, f"{grader}_weights")


@dataclass(frozen=True, kw_only=True)
class ReferenceModelConfig:
    """The model-based grader: mean next-token loss of a document's first `max_tokens` tokens under a small
    reference checkpoint (`model/`), added to every domain's features as `reference_loss`."""

    enabled: bool = False
    """Off unless a checkpoint and a tokenizer are named."""
    checkpoint_path: str = ""
    """An rnj checkpoint folder (config.json + model.safetensors, as model.hf.write_rnj writes it)."""
    tokenizer_path: str = ""
    """The tokenizer.json (or its folder) the checkpoint was trained with."""
    max_tokens: int = 256
    """Tokens scored per document (its beginning); at most the checkpoint's max_seq_len."""
    batch_size: int = 8
    """Documents per forward pass. Every pass has the fixed shape (batch_size, max_tokens), padded, so a
    document's loss does not depend on which documents share its batch (byte-identical outputs)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the model runs; auto: cuda when available."""
    weight: float = 1.0
    """Weight of `reference_loss` in every grader's raw score (beside that grader's weights)."""

    def __post_init__(self) -> None:
        require(not self.enabled or (bool(self.checkpoint_path) and bool(self.tokenizer_path)),
                "an enabled reference model needs checkpoint_path and tokenizer_path")
        require(self.max_tokens >= 2 and self.batch_size >= 1, "max_tokens must be >= 2 and batch_size >= 1")
        require(self.weight >= 0, "weight must be non-negative")


@dataclass(frozen=True, kw_only=True)
class GradeConfig:
    enabled: bool = True
    """Run the filters and graders at all; when false every document passes through tagged with its domain,
    difficulty 0 and tier 0."""
    filters: FiltersConfig = FiltersConfig()
    """Quality filters."""
    domain: DomainConfig = DomainConfig()
    """Domain tagging."""
    difficulty: DifficultyConfig = DifficultyConfig()
    """Difficulty graders and tiers."""
    reference_model: ReferenceModelConfig = ReferenceModelConfig()
    """The optional model-based grader."""
    report_examples: int = 3
    """Example document ids per domain and tier in report.json."""

    def __post_init__(self) -> None:
        require(self.report_examples >= 0, "report_examples must be non-negative")
        from pipeline.grading.graders import check_weights  # here: graders import this module

        problem = check_weights(self.difficulty)
        require(problem is None, problem or "")
