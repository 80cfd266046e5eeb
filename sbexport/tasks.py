"""The one task registry. The CLI's choices, the exporters, verify, bench, eval and the tests
all read TASKS; adding a task is one entry here.

A task names its head, its default labels (a checkpoint's own id2label wins when it has one),
its inputs and outputs with their dynamic axes, and the parity tolerance of its outputs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import SbexportError

# Head kind -> the class-name suffix each architecture uses for it.
HEADS = {
    "base": "Model",
    "masked-lm": "ForMaskedLM",
    "sequence-classification": "ForSequenceClassification",
    "multiple-choice": "ForMultipleChoice",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
}

# model_type -> (module holding the classes, class-name prefix)
ARCHITECTURES = {
    "squeezebert": ("sbexport.modeling", "SqueezeBert"),
    "bert": ("sbexport.modeling_bert", "Bert"),
}

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

# Output name -> its axes. "labels", "vocab" and "hidden" are fixed by the model; "batch",
# "sequence" and "choices" are dynamic in every export.
OUTPUT_AXES = {
    "last_hidden_state": ("batch", "sequence", "hidden"),
    "pooler_output": ("batch", "hidden"),
    "logits": None,  # depends on the head, see Task.output_axes
    "start_logits": ("batch", "sequence"),
    "end_logits": ("batch", "sequence"),
}
_LOGIT_AXES = {
    "masked-lm": ("batch", "sequence", "vocab"),
    "sequence-classification": ("batch", "labels"),
    "multiple-choice": ("batch", "choices"),
    "token-classification": ("batch", "sequence", "labels"),
}
DYNAMIC_AXES = ("batch", "choices", "sequence")

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
class Task:
    """One exportable task.

    atol and rtol bound the difference between the PyTorch reference and an exported fp32
    file, per output: max |got - ref| <= atol + rtol * max |ref| at the positions a consumer
    reads (verify.compare); see FP32_ATOL for what they were measured on.
    """

    name: str
    head: str
    description: str
    labels: tuple[str, ...] = ()
    pair: bool = True                 # inputs are text pairs (premise / hypothesis, ...)
    problem_type: str | None = None
    num_choices: int = 0              # multiple choice only
    default_checkpoint: str = SQUEEZEBERT_UNCASED
    atol: float = FP32_ATOL
    rtol: float = FP32_RTOL

    @property
    def outputs(self) -> tuple[str, ...]:
        return {"base": ("last_hidden_state", "pooler_output"),
                "question-answering": ("start_logits", "end_logits")}.get(self.head, ("logits",))

    @property
    def input_axes(self) -> tuple[str, ...]:
        return ("batch", "choices", "sequence") if self.head == "multiple-choice" else ("batch", "sequence")

    def output_axes(self, name: str) -> tuple[str, ...]:
        return _LOGIT_AXES[self.head] if name == "logits" else OUTPUT_AXES[name]

    def model_class(self, model_type: str = "squeezebert") -> type:
        """The head class of this task for an architecture ("squeezebert" or "bert")."""
        if model_type not in ARCHITECTURES:
            raise SbexportError(f"unknown architecture {model_type!r}; expected one of {', '.join(ARCHITECTURES)}")
        module, prefix = ARCHITECTURES[model_type]
        return getattr(importlib.import_module(module), prefix + HEADS[self.head])

    def config_overrides(self) -> dict:
        """What the task fixes in a config that has no labels of its own (random init)."""
        if self.head in ("sequence-classification", "token-classification") and self.labels:
            return {"id2label": dict(enumerate(self.labels)), "problem_type": self.problem_type}
        return {}


def _glue(name: str, labels: tuple[str, ...], description: str, pair: bool = True) -> Task:
    return Task(name, "sequence-classification", description, labels, pair=pair,
                problem_type="single_label_classification", default_checkpoint=SQUEEZEBERT_MNLI)


TASKS: dict[str, Task] = {t.name: t for t in (
    _glue("mnli", ("entailment", "neutral", "contradiction"), "natural language inference (GLUE MNLI)"),
    _glue("sst2", ("negative", "positive"), "sentiment (GLUE SST-2)", pair=False),
    _glue("qqp", ("not_duplicate", "duplicate"), "question pairs (GLUE QQP)"),
    _glue("qnli", ("entailment", "not_entailment"), "question NLI (GLUE QNLI)"),
    _glue("rte", ("entailment", "not_entailment"), "textual entailment (GLUE RTE)"),
    _glue("mrpc", ("not_equivalent", "equivalent"), "paraphrase (GLUE MRPC)"),
    _glue("cola", ("unacceptable", "acceptable"), "grammatical acceptability (GLUE CoLA)", pair=False),
    _glue("wnli", ("not_entailment", "entailment"), "Winograd NLI (GLUE WNLI)"),
    Task("stsb", "sequence-classification", "semantic similarity score, regression (GLUE STS-B)",
         ("score",), problem_type="regression", default_checkpoint=SQUEEZEBERT_MNLI),
    Task("squad", "question-answering", "extractive question answering (SQuAD)"),
    Task("ner", "token-classification", "named entities (CoNLL-2003)", CONLL_LABELS, pair=False),
    Task("swag", "multiple-choice", "multiple choice, 4 endings (SWAG)", num_choices=4),
    Task("fill-mask", "masked-lm", "masked language model", pair=False),
    Task("features", "base", "bare encoder: last hidden state and pooled output", pair=False),
)}


def get_task(name: str) -> Task:
    """The registered task called `name`; raises SbexportError listing the tasks otherwise."""
    if name not in TASKS:
        raise SbexportError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]
