"""The one task registry. The CLI's choices, the exporters, verify, predict, eval, bench and the
tests all read TASKS.

A task names its head (a heads.Head record, which knows everything that differs between heads:
model classes, outputs and axes, encoding, decoding, eval formats and scoring), its default
labels (a checkpoint's own id2label wins when it has one), whether it takes text pairs, the
parity tolerance of its outputs, and how eval reads and scores it (its GLUE columns, its
metrics where they differ from its head's). Adding a task on an existing head is one entry in
TASKS; adding a head is one record in heads.py plus its model class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import SbexportError
from .heads import (
    BASE,
    HEADS,
    INPUT_NAMES,
    MASKED_LM,
    MULTIPLE_CHOICE,
    QUESTION_ANSWERING,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    Head,
)

__all__ = ["HEADS", "INPUT_NAMES", "TASKS", "GlueColumns", "Head", "Task", "get_task"]

SQUEEZEBERT_MNLI = "squeezebert/squeezebert-mnli"
SQUEEZEBERT_UNCASED = "squeezebert/squeezebert-uncased"
BERT_BASE = "bert-base-uncased"

CONLL_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


# Parity tolerance of an exported fp32 file against the PyTorch reference, per output and case:
# max |got - ref| <= FP32_ATOL + FP32_RTOL * scale, scale = max |ref|, both over the values a
# consumer reads (real tokens of a token-level output; every row of a sequence-level one; see
# verify.compare). Measured on the Intel kind (2 Sapphire Rapids cores, torch 2.13.0, onnxruntime
# 1.32, executorch 1.5.1) over verify's own sweep up to sequence 512, real positions, worst case
# (benchmarks/parity_tolerance.py -> results/parity_tolerance_intel.json), ONNX / ExecuTorch:
#   MiniLM-L6 converted by convert-bert (real weights; other heads seeded random on the backbone)
#     last_hidden_state  6.1e-6 / 7.2e-6 at scale 5.7-6.3 (1.1e-6 relative; padded: 1.2e-4 / none)
#     pooler_output      2.9e-7 / 3.1e-7 at scale 0.22
#     fill-mask logits   1.5e-5 / 2.2e-5 at scale 6.7-7.6 (3.1e-6 relative; padded: 1.3e-4)
#     squad end_logits   9.7e-7 / 1.9e-6 at scale 0.24-0.47 (the nearest its bound: 17% / 19%)
#     ner logits         1.3e-6 / 1.7e-6 at scale 0.60; mnli, stsb, swag logits <= 7e-8 at 0.001-0.05
#   full-size random-init SqueezeBERT mnli logits  3.6e-7 / 5.1e-7 at scale 0.33-0.59
# Published for the AMD kind (Zen 3): full-size random init 4e-7 / 7e-7, 1.1-1.4x the Intel kind.
# The worst measured error is 19% of its bound: a 5x margin for the other machine kind. rtol
# carries outputs of scale ~1 and more; atol the small ones (random heads give logits of ~0.02),
# whose drift is ~1e-7. Tighter than needed, no looser: the tanh GELU (ONNX Runtime's FastGelu)
# in place of the exact one, on the same weights, is 10x to 125x this bound on every task
# (tests/test_parity_real.py). Padded positions are not judged: no head reads them, and they
# drift 10-20x further (a padded row attends to a few real tokens and amplifies the rounding).
FP32_ATOL = 1e-6
FP32_RTOL = 2e-5


@dataclass(frozen=True)
class GlueColumns:
    """Where a task's texts and label sit in GLUE's dev TSV: header names (second None for a
    one-text task), and the columns of a file that has no header row (CoLA's own dev.tsv)."""

    first: str
    second: str | None
    label: str
    no_header: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """One exportable task.

    atol and rtol bound the difference between the PyTorch reference and an exported fp32
    file, per output: max |got - ref| <= atol + rtol * max |ref| at the positions a consumer
    reads (verify.compare); see FP32_ATOL for what they were measured on.
    """

    name: str
    head: Head
    description: str
    labels: tuple[str, ...] = ()
    pair: bool = True                 # inputs are text pairs (premise / hypothesis, ...)
    problem_type: str | None = None
    num_choices: int = 0              # multiple choice only: the example's choices at export
    default_checkpoint: str = SQUEEZEBERT_UNCASED
    atol: float = FP32_ATOL
    rtol: float = FP32_RTOL
    glue: GlueColumns | None = None   # eval: its columns in GLUE's dev TSV, when GLUE has it
    metrics: tuple[str, ...] = ()     # eval: its metrics, headline first; () takes the head's

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.head.outputs)

    @property
    def label_count_fixed(self) -> bool:
        """Whether the task's data set fixes its label count (GLUE's: sst2 has 2 labels, mnli 3,
        stsb one score), so that a classifier of another count cannot serve it. ner's tags vary
        with the data (CoNLL-2003's are only the default): a checkpoint's own tags are kept."""
        return self.glue is not None

    @property
    def input_axes(self) -> tuple[str, ...]:
        return self.head.input_axes

    def input_shape(self, batch: int, seq_len: int) -> tuple[int, ...]:
        """The shape of each input: [batch, sequence], or [batch, choices, sequence]."""
        return (batch, self.num_choices, seq_len) if self.head.choices else (batch, seq_len)

    def output_axes(self, name: str) -> tuple[str, ...]:
        return self.head.outputs[name]

    def class_axis(self, name: str) -> int | None:
        """The axis of output `name` that argmax and top-k are read over (its last: one score
        per label, token, ending or position), or None: hidden states ("hidden"), and a
        regression's single score."""
        if self.problem_type == "regression" or self.output_axes(name)[-1] == "hidden":
            return None
        return -1

    def model_class(self, model_type: str = "squeezebert") -> type:
        """The head class of this task for an architecture ("squeezebert" or "bert")."""
        return self.head.model_class(model_type)

    def config_overrides(self) -> dict:
        """What the task fixes in a config that has no labels of its own (random init)."""
        if self.head.has_labels and self.labels:
            return {"id2label": dict(enumerate(self.labels)), "problem_type": self.problem_type}
        return {}

    @property
    def metric_names(self) -> tuple[str, ...]:
        """What eval reports, headline first (empty when eval cannot score the task)."""
        return self.metrics or self.head.metrics

    def score(self, gold: Sequence, pred: Sequence, positive=None) -> dict[str, float]:
        """The task's metrics of predictions `pred` against `gold` (see metrics.py)."""
        return self.head.score(self.metric_names, gold, pred, positive)


def _glue(name: str, labels: tuple[str, ...], description: str, columns: tuple, *, pair: bool = True,
          no_header: tuple[str, ...] = (), metrics: tuple[str, ...] = ()) -> Task:
    return Task(name, SEQUENCE_CLASSIFICATION, description, labels, pair=pair,
                problem_type="single_label_classification", default_checkpoint=SQUEEZEBERT_MNLI,
                glue=GlueColumns(*columns, no_header=no_header), metrics=metrics)


# GLUE's choice of metrics: F1 beside accuracy where the classes are unbalanced (MRPC, QQP),
# Matthews correlation for CoLA, correlations for STS-B. The columns are the header names of
# GLUE's dev files (MNLI: dev_matched.tsv / dev_mismatched.tsv).
TASKS: dict[str, Task] = {t.name: t for t in (
    _glue("mnli", ("entailment", "neutral", "contradiction"), "natural language inference (GLUE MNLI)",
          ("sentence1", "sentence2", "gold_label")),
    _glue("sst2", ("negative", "positive"), "sentiment (GLUE SST-2)", ("sentence", None, "label"), pair=False),
    _glue("qqp", ("not_duplicate", "duplicate"), "question pairs (GLUE QQP)",
          ("question1", "question2", "is_duplicate"), metrics=("f1", "accuracy")),
    _glue("qnli", ("entailment", "not_entailment"), "question NLI (GLUE QNLI)", ("question", "sentence", "label")),
    _glue("rte", ("entailment", "not_entailment"), "textual entailment (GLUE RTE)",
          ("sentence1", "sentence2", "label")),
    _glue("mrpc", ("not_equivalent", "equivalent"), "paraphrase (GLUE MRPC)",
          ("#1 String", "#2 String", "Quality"), metrics=("f1", "accuracy")),
    _glue("cola", ("unacceptable", "acceptable"), "grammatical acceptability (GLUE CoLA)",
          ("sentence", None, "label"), pair=False, metrics=("matthews_corr",),
          no_header=("source", "label", "original_label", "sentence")),   # in_domain_dev.tsv
    _glue("wnli", ("not_entailment", "entailment"), "Winograd NLI (GLUE WNLI)", ("sentence1", "sentence2", "label")),
    Task("stsb", SEQUENCE_CLASSIFICATION, "semantic similarity score, regression (GLUE STS-B)",
         ("score",), problem_type="regression", default_checkpoint=SQUEEZEBERT_MNLI,
         glue=GlueColumns("sentence1", "sentence2", "score"), metrics=("pearson", "spearman")),
    Task("squad", QUESTION_ANSWERING, "extractive question answering (SQuAD)"),
    Task("ner", TOKEN_CLASSIFICATION, "named entities (CoNLL-2003)", CONLL_LABELS, pair=False),
    Task("swag", MULTIPLE_CHOICE, "multiple choice, 4 endings (SWAG)", num_choices=4),
    Task("fill-mask", MASKED_LM, "masked language model", pair=False),
    Task("features", BASE, "bare encoder: last hidden state and pooled output", pair=False),
)}


def get_task(name: str) -> Task:
    """The registered task called `name`; raises SbexportError listing the tasks otherwise."""
    if name not in TASKS:
        raise SbexportError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]


def evaluable_tasks() -> list[str]:
    """The tasks `sbexport eval` can score: those whose head names a data format."""
    return [name for name, t in TASKS.items() if t.head.eval_formats]
