"""The heads: one Head record per head, holding everything sbexport does differently for it.

A head is what sits on the backbone (a classifier, a span picker, a tagger, ...). Its record
names its model class per architecture, its outputs and their axes, whether its inputs carry a
choices axis, whether it has labels, how texts are encoded for it and how predict decodes its
outputs, and which data formats eval reads for it and how they are scored. Export, verify,
predict, eval, bench, convert and the CLI read these records (through tasks.Task.head); no
other module branches on a head's name.

Adding a task on an existing head is one Task entry in tasks.py. Adding a head is one Head
record here (and its line in HEADS) plus its model class in modeling.py (and modeling_bert.py
for the BERT baseline).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import metrics
from .errors import SbexportError

# Architecture -> the module holding its model classes. The classes are imported when a head's
# class is first asked for, not with this module: the CLI reads the registry for its choices,
# and torch imported with it would cost every command (even --help) ~2 s of a 0.1 s start.
# tests/test_tasks.py resolves every head's class of every architecture, so a renamed class
# fails there, not in a user's run.
ARCHITECTURE_MODULES = {"squeezebert": "sbexport.modeling", "bert": "sbexport.modeling_bert"}

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Output axes: "batch", "choices" and "sequence" are the inputs'; "labels", "vocab" and "hidden"
# are fixed by the model. The last axis of an output of scores is what argmax reads (a label,
# a token, an ending, an answer's start or end position); "hidden" holds features instead.
CHOICE_SEPARATOR = "|"      # predict's endings of a multiple-choice question, in one text
MAX_ANSWER_TOKENS = 30      # the longest answer span question answering picks
# A question's context longer than the file takes is cut into overlapping windows, each a row
# with the whole question, not truncated (predict and eval; Head.windowed). Neighbours share
# DOC_STRIDE tokens, or half a window where that is less, so that an answer one window's edge
# cuts lies whole in the next: the value of transformers' run_qa and question-answering pipeline.
DOC_STRIDE = 128

# One example's texts: (first, second). second is None for one text, a string for a pair
# (the question's context for question answering), a list of endings for multiple choice.
Texts = tuple[str, "str | Sequence[str] | None"]


@dataclass(frozen=True, eq=False)
class Head:
    """One head: what export, verify, predict and eval need to know about it.

    decode(outputs, enc, texts, *, labels, tokenizer, top_k) -> dict is predict's answer for
    one example: outputs maps each output name to its [1, ...] array, enc the example's
    encoding ([1, sequence] arrays with offset_mapping), texts its Texts; it raises
    SbexportError when the outputs do not fit the labels or the text lacks what the head needs.
    score(names, gold, pred, positive) -> {name: value} is one of metrics.score_*.
    """

    name: str
    classes: Mapping[str, str]                  # model_type -> its model class's name
    outputs: Mapping[str, tuple[str, ...]]      # output name -> its axes, in the model's output order
    decode: Callable[..., dict]
    show: Callable[[dict], str]                 # predict's text for one decoded answer
    has_labels: bool = False                    # one output column per label of config.id2label
    choices: bool = False                       # inputs [batch, choices, sequence], one row per ending
    # Encoding: tokenizers' truncation strategy, and the second text where the head needs one
    # (its description for error messages). "only_second" keeps the first text whole.
    truncation: bool | str = True
    windowed: bool = False                      # encode(windows=True) cuts the second text into windows
    second_text: str | None = None
    one_text: str = "takes one text"            # what a one-text task does (error messages)
    # Eval: the data formats it is scored on (none: not evaluable), its tasks' metrics unless a
    # task names its own (headline first), the scorer, and what agreement with PyTorch counts.
    eval_formats: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    score: Callable[..., dict] | None = None
    eval_unit: str = "example"

    @property
    def input_axes(self) -> tuple[str, ...]:
        return ("batch", "choices", "sequence") if self.choices else ("batch", "sequence")

    def model_class(self, model_type: str = "squeezebert") -> type:
        """The head's class for an architecture ("squeezebert" or "bert"); raises SbexportError
        for another."""
        if model_type not in self.classes:
            raise SbexportError(f"unknown architecture {model_type!r}; expected one of {', '.join(self.classes)}")
        return getattr(importlib.import_module(ARCHITECTURE_MODULES[model_type]), self.classes[model_type])

    def unfit(self, tokenizer, texts: Texts, max_seq: int) -> str | None:
        """Why `texts` cannot be encoded in `max_seq` tokens with this head's truncation, or
        None when they can: every text keeps at least one token beside the special tokens
        ([CLS] a [SEP] (b [SEP])), and "only_second" truncation cuts only the second text."""
        first, second = texts
        if self.truncation == "only_second":
            tokens = len(tokenizer(first, add_special_tokens=False)["input_ids"])
            if tokens + 4 > max_seq:
                return (f"the question is {tokens} tokens; this file takes at most {max_seq} tokens for "
                        f"question, context and 3 special tokens, so there is no room for the context: "
                        f"shorten the question to at most {max_seq - 4} tokens")
            return None
        needed = 5 if second is not None else 3
        if max_seq < needed:
            return (f"[CLS], [SEP] and a token of each text need {needed} tokens; this file takes at most "
                    f"{max_seq}: re-export it with a larger --max-seq-len")
        return None

    def encode(self, tokenizer, texts: Sequence[Texts], max_seq: int, *, windows: bool = False) -> Encoded:
        """Tokenize a batch of examples for this head: padded to the longest row, truncated to
        `max_seq`, one row per example. Multiple choice pairs each ending with its context
        (every example must have as many endings) and gives [batch, choices, sequence] arrays.
        With `windows`, a windowed head's second text is not truncated but cut into overlapping
        windows, one row each (Encoded.rows): what reads answers across rows asks for it (predict
        and eval), not what needs one row per example (verify's cases, calibration).
        Returns an Encoded."""
        if windows and self.windowed:
            return _encode_windows(tokenizer, texts, max_seq)
        first = [t[0] for t in texts]
        second = [t[1] for t in texts] if texts and texts[0][1] is not None else None
        if self.choices:    # one row per ending: [batch * choices] texts
            first = [f for f, endings in zip(first, second) for _ in endings]
            second = [ending for endings in second for ending in endings]
        enc = tokenizer(first, second, padding="longest", truncation=self.truncation, max_length=max_seq,
                        return_tensors="np", return_offsets_mapping=True)
        full = [len(ids) for ids in tokenizer(first, second)["input_ids"]]
        enc = {k: np.asarray(enc[k]) for k in (*INPUT_NAMES, "offset_mapping")}
        if self.choices:    # [batch * choices, S, ...] -> [batch, choices, S, ...]
            enc = {k: v.reshape(len(texts), -1, *v.shape[1:]) for k, v in enc.items()}
        lengths = np.asarray(full).reshape(len(texts), -1).max(axis=1).tolist()
        rows = [slice(i, i + 1) for i in range(len(texts))]
        return Encoded({k: enc[k].astype(np.int64) for k in INPUT_NAMES}, enc, lengths, rows)


@dataclass(frozen=True)
class Encoded:
    """A batch of examples encoded for a head: one row each, or several (context windows)."""

    feeds: dict[str, np.ndarray]      # INPUT_NAMES -> int64 [rows, sequence] ([rows, choices, sequence])
    arrays: dict[str, np.ndarray]     # the same and offset_mapping [rows, (choices,) sequence, 2]
    lengths: list[int]                # tokens of each example before truncation (its longest row)
    rows: list[slice]                 # each example's rows

    def example(self, i: int) -> dict[str, np.ndarray]:
        """Example i's arrays, [its rows, ...], as decoders take them."""
        return {k: v[self.rows[i]] for k, v in self.arrays.items()}


def _encode_windows(tokenizer, texts: Sequence[Texts], max_seq: int) -> Encoded:
    """Question and context pairs with each context whole: [CLS] question [SEP] context [SEP],
    in context_windows' rows where it is longer than `max_seq`; padded to the longest row."""
    rows, slices = [], []
    for question, context in texts:
        first = len(rows)
        rows += context_windows(tokenizer(question, context, return_offsets_mapping=True), max_seq)
        slices.append(slice(first, len(rows)))
    arrays = _padded(rows, tokenizer.pad_token_id)
    lengths = [max(len(row["input_ids"]) for row in rows[s]) for s in slices]
    return Encoded({k: arrays[k] for k in INPUT_NAMES}, arrays, lengths, slices)


def context_windows(whole: dict, max_seq: int) -> list[dict]:
    """Rows of at most `max_seq` tokens for one encoded [CLS] question [SEP] context [SEP]
    (lists, with offset_mapping): `whole` when it fits; else each row is the question part,
    a window of the context, and the closing [SEP], neighbouring windows sharing DOC_STRIDE
    tokens (half a window when that is less). Head.unfit makes sure a row has room for a context token."""
    if len(whole["input_ids"]) <= max_seq:
        return [whole]
    first = whole["token_type_ids"].index(1)           # the context's first token
    context = len(whole["input_ids"]) - 1 - first      # its tokens, before the closing [SEP]
    room = max_seq - first - 1
    step = room - min(DOC_STRIDE, room // 2)
    starts = [0]
    while starts[-1] + room < context:
        starts.append(starts[-1] + step)
    return [{k: v[:first] + v[first + s:first + min(s + room, context)] + v[-1:] for k, v in whole.items()}
            for s in starts]


def _padded(rows: list[dict], pad_id: int) -> dict[str, np.ndarray]:
    """Rows of lists as int64 arrays [rows, longest]: padding is pad_id, type 0, mask 0, (0, 0)."""
    length = max(len(row["input_ids"]) for row in rows)
    fill = {"input_ids": pad_id, "token_type_ids": 0, "attention_mask": 0, "offset_mapping": (0, 0)}
    return {k: np.asarray([row[k] + [fill[k]] * (length - len(row[k])) for row in rows], dtype=np.int64)
            for k in fill}


# -- decoders: predict's answer for one example ------------------------------------------------

def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _label_names(labels: Sequence[str], logits: np.ndarray) -> Sequence[str]:
    """`labels`, one per column of `logits` ([..., labels]); raises SbexportError when the model
    file's width differs (open_artifact checked them against config.json only)."""
    if len(labels) != logits.shape[-1]:
        raise SbexportError(f"the model file gives {logits.shape[-1]} scores but the manifest names "
                            f"{len(labels)} labels; re-export the artifact")
    return labels


def decode_labels(outputs, enc, texts, *, labels, tokenizer, top_k) -> dict:
    """Every label with its probability, best first; a regression's one score as it is."""
    logits = outputs["logits"][0]
    labels = _label_names(labels, logits)
    if len(logits) == 1:
        return {"score": float(logits[0])}
    probs = softmax(logits)
    order = np.argsort(-probs)
    return {"labels": [{"label": labels[i], "score": float(probs[i])} for i in order]}


def decode_choices(outputs, enc, texts, *, labels, tokenizer, top_k) -> dict:
    """Each ending's probability, and the best ending's index."""
    probs = softmax(outputs["logits"][0])
    return {"choices": [{"choice": i, "score": float(p)} for i, p in enumerate(probs)],
            "best": int(probs.argmax())}


def decode_tags(outputs, enc, texts, *, labels, tokenizer, top_k) -> dict:
    """One label per word piece, with its characters in the (first) text; special tokens skipped."""
    names = _label_names(labels, outputs["logits"][0])
    best = outputs["logits"][0].argmax(-1)
    text = texts[0]
    tokens = []
    for i, (start, end) in enumerate(enc["offset_mapping"][0]):
        if end > start:
            tokens.append({"token": text[start:end], "start": int(start), "end": int(end),
                           "label": names[best[i]]})
    return {"tokens": tokens}


def decode_span(outputs, enc, texts, *, labels, tokenizer, top_k) -> dict:
    """The best span inside the context (token type 1) with start <= end, at most 30 tokens,
    over the example's rows (its context windows): the highest start + end logit, as
    transformers' run_qa compares windows."""
    spans = [_best_span(outputs["start_logits"][r], outputs["end_logits"][r], {k: v[r] for k, v in enc.items()})
             for r in range(len(enc["input_ids"]))]
    spans = [span for span in spans if span is not None]
    if not spans:
        return {"answer": "", "start": 0, "end": 0, "score": None}
    score, lo, hi = max(spans, key=lambda span: span[0])
    return {"answer": texts[1][lo:hi], "start": lo, "end": hi, "score": score}


def _best_span(start: np.ndarray, end: np.ndarray, row: dict) -> tuple[float, int, int] | None:
    """(score, first character, end character) of one row's best context span, or None when
    the row holds no context token. start, end: [sequence] logits; row: one row's arrays."""
    in_context = (row["token_type_ids"] == 1) & (row["attention_mask"] == 1)
    in_context &= row["offset_mapping"][:, 1] > row["offset_mapping"][:, 0]
    score = start[:, None] + end[None, :]
    allowed = np.triu(np.ones_like(score, dtype=bool)) & ~np.triu(np.ones_like(score, dtype=bool), MAX_ANSWER_TOKENS)
    allowed &= in_context[:, None] & in_context[None, :]
    if not allowed.any():
        return None
    i, j = np.unravel_index(np.where(allowed, score, -np.inf).argmax(), score.shape)
    return float(score[i, j]), int(row["offset_mapping"][i][0]), int(row["offset_mapping"][j][1])


def decode_masks(outputs, enc, texts, *, labels, tokenizer, top_k) -> dict:
    """The top_k candidates at every [MASK] position; raises SbexportError without one."""
    ids = enc["input_ids"][0]
    positions = np.flatnonzero(ids == tokenizer.mask_token_id)
    if not len(positions):
        mask = tokenizer.convert_ids_to_tokens(tokenizer.mask_token_id)
        whole = tokenizer(*texts)["input_ids"]        # untruncated: was the mask cut off?
        if tokenizer.mask_token_id in whole:
            raise SbexportError(f"the {mask} token is at token {whole.index(tokenizer.mask_token_id) + 1} of "
                                f"{len(whole)}, beyond the file's maximum of {len(ids)} tokens: put it earlier "
                                f"or shorten the text")
        raise SbexportError(f"fill-mask needs a {mask} token in the text")
    logits = outputs["logits"][0][:, :tokenizer.vocab_size]   # rows past the vocabulary are unused
    result = []
    for pos in positions:
        probs = softmax(logits[pos])
        best = np.argsort(-probs)[:top_k]
        result.append([{"token": tokenizer.convert_ids_to_tokens(int(t)), "score": float(probs[t])} for t in best])
    return {"masks": result}


def decode_features(outputs, enc, texts, *, labels, tokenizer, top_k) -> dict:
    """The hidden state's shape and the first 8 pooled values."""
    pooled = outputs["pooler_output"][0]
    return {"last_hidden_state_shape": list(outputs["last_hidden_state"].shape),
            "pooler_output": [round(float(v), 6) for v in pooled[:8]] + (["..."] if len(pooled) > 8 else [])}


# -- predict's text of a decoded answer: one line per label, choice, tag or [MASK] --------------

def show_labels(r: dict) -> str:
    if "score" in r:                     # regression (one output column): decode_labels' score
        return f"score {r['score']:.4f}"
    return "\n".join(f"{x['label']:<20} {x['score']:.4f}" for x in r["labels"])


def show_choices(r: dict) -> str:
    return "\n".join(f"choice {c['choice']}: {c['score']:.4f}" for c in r["choices"])


def show_tags(r: dict) -> str:
    return "\n".join(f"{t['token']:<20} {t['label']}" for t in r["tokens"])


def show_span(r: dict) -> str:
    return f"answer: {r['answer']!r} (characters {r['start']}-{r['end']})"


def show_masks(r: dict) -> str:
    return "\n".join(" ".join(f"{c['token']}({c['score']:.3f})" for c in cands) for cands in r["masks"])


def show_features(r: dict) -> str:
    return f"last_hidden_state {r['last_hidden_state_shape']}, pooler_output {r['pooler_output']}"


# -- the records ------------------------------------------------------------------------------

BASE = Head(
    "base", {"squeezebert": "SqueezeBertModel", "bert": "BertModel"},
    {"last_hidden_state": ("batch", "sequence", "hidden"), "pooler_output": ("batch", "hidden")},
    decode_features, show_features)
MASKED_LM = Head(
    "masked-lm", {"squeezebert": "SqueezeBertForMaskedLM", "bert": "BertForMaskedLM"},
    {"logits": ("batch", "sequence", "vocab")}, decode_masks, show_masks)
SEQUENCE_CLASSIFICATION = Head(
    "sequence-classification",
    {"squeezebert": "SqueezeBertForSequenceClassification", "bert": "BertForSequenceClassification"},
    {"logits": ("batch", "labels")}, decode_labels, show_labels, has_labels=True,
    eval_formats=("glue", "jsonl"), metrics=("accuracy",), score=metrics.score_labels)
MULTIPLE_CHOICE = Head(
    "multiple-choice", {"squeezebert": "SqueezeBertForMultipleChoice", "bert": "BertForMultipleChoice"},
    {"logits": ("batch", "choices")}, decode_choices, show_choices, choices=True,
    second_text=f"endings separated by {CHOICE_SEPARATOR}")
TOKEN_CLASSIFICATION = Head(
    "token-classification",
    {"squeezebert": "SqueezeBertForTokenClassification", "bert": "BertForTokenClassification"},
    {"logits": ("batch", "sequence", "labels")}, decode_tags, show_tags, has_labels=True,
    one_text="tags the words of one text",
    eval_formats=("conll",), metrics=("entity_f1", "entity_precision", "entity_recall"),
    score=metrics.score_entities, eval_unit="word")
QUESTION_ANSWERING = Head(
    "question-answering", {"squeezebert": "SqueezeBertForQuestionAnswering", "bert": "BertForQuestionAnswering"},
    {"start_logits": ("batch", "sequence"), "end_logits": ("batch", "sequence")}, decode_span, show_span,
    truncation="only_second", windowed=True, second_text="the context",
    eval_formats=("squad",), metrics=("exact_match", "f1"), score=metrics.score_answers)

HEADS: dict[str, Head] = {h.name: h for h in (
    BASE, MASKED_LM, SEQUENCE_CLASSIFICATION, MULTIPLE_CHOICE, TOKEN_CLASSIFICATION, QUESTION_ANSWERING)}
