"""Predict with an exported artifact: tokenize with its own tokenizer, run its model file,
decode by head (labels with scores, answer span, tagged tokens, masked-word candidates, or the
embedding). A text longer than the file's maximum sequence is truncated with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .artifact import open_artifact
from .errors import SbexportError
from .runtime import open_runner
from .tasks import INPUT_NAMES, get_task
from .tokenizer import SqueezeBertTokenizer, has_tokenizer


class PredictWarning(UserWarning):
    """Something the user should know about a prediction (its text was truncated)."""


CHOICE_SEPARATOR = "|"
MAX_ANSWER_TOKENS = 30


def predict(folder: str | Path, text: str, text_pair: str | None = None, top_k: int = 5) -> dict:
    """Run the artifact at `folder` on one text (or pair) and return a JSON-ready result.

    Multiple choice takes the context as `text` and the endings as `text_pair`, separated by
    '|'. Question answering takes the question as `text` and the context as `text_pair`.
    Raises SbexportError for an empty or non-UTF-8 text, a pair given to a one-text task, a
    question longer than the file allows, a missing tokenizer or a tampered artifact.
    """
    folder = Path(folder)
    manifest = open_artifact(folder)
    task = get_task(manifest.task)
    _check_texts(task, text, text_pair)
    tokenizer = _tokenizer(folder)
    max_seq = manifest.dims.sequence[1]
    if task.head == "question-answering":
        _check_question_fits(tokenizer, text, max_seq)
    first, second = _texts(task, text, text_pair, manifest.dims)
    truncation = "only_second" if task.head == "question-answering" else True
    enc = tokenizer(first, second, padding="longest", truncation=truncation,
                    max_length=max_seq, return_tensors="np", return_offsets_mapping=True)
    _warn_if_truncated(tokenizer, first, second, max_seq)
    feeds = {k: np.asarray(enc[k], dtype=np.int64) for k in INPUT_NAMES}
    if task.head == "multiple-choice":
        feeds = {k: v[None] for k, v in feeds.items()}                   # [1, choices, S]
    batch = manifest.dims.batch[0]
    if batch > 1:   # a fixed-batch file (ExecuTorch --batch N): repeat the row, decode row 0
        feeds = {k: np.repeat(v, batch, axis=0) for k, v in feeds.items()}
    outputs = dict(zip(task.outputs, open_runner(folder / manifest.model_file, INPUT_NAMES).run(feeds)))
    return {"task": task.name, **DECODERS[task.head](outputs, enc, tokenizer, manifest.labels, top_k,
                                                    text_pair if task.head == "question-answering" else text)}


def _check_texts(task, text: str, text_pair: str | None) -> None:
    """Raise SbexportError for a blank text, a text that is not valid Unicode (bytes that are
    not UTF-8 reach Python's argv as lone surrogates), a second text given to a task that
    takes one, or a missing second text where one is needed."""
    for name, value in (("TEXT", text), ("TEXT_PAIR", text_pair)):
        if value is None:
            continue
        if not value.strip():
            raise SbexportError("empty text: give at least one non-blank character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise SbexportError(f"{name} is not UTF-8 text (character {e.start} is "
                                f"{_undecodable(value[e.start])}); re-encode it as UTF-8") from None
    if text_pair is not None and not task.pair:
        what = "tags the words of one text" if task.head == "token-classification" else "takes one text"
        raise SbexportError(f"task {task.name} {what}; got a second text (TEXT_PAIR): join them into one "
                            f"or use a pair task such as mnli")
    if task.head in ("question-answering", "multiple-choice") and text_pair is None:
        raise SbexportError(f"task {task.name} needs a second text ("
                            f"{'the context' if task.head == 'question-answering' else 'endings separated by |'})")


def _undecodable(char: str) -> str:
    """'the byte 0xff' for a surrogate escape (U+DC80..U+DCFF), else the code point."""
    code = ord(char)
    return f"the byte {code - 0xDC00:#04x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}, a lone surrogate"


def _check_question_fits(tokenizer, question: str, max_seq: int) -> None:
    """Raise SbexportError when the question leaves no room for the context: only the context
    is truncated ([CLS] question [SEP] context [SEP] must keep at least one context token)."""
    tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    if tokens + 4 > max_seq:
        raise SbexportError(f"the question is {tokens} tokens; this file takes at most {max_seq} tokens "
                            f"for question, context and 3 special tokens: shorten the question to at "
                            f"most {max_seq - 4} tokens")


def _tokenizer(folder: Path) -> SqueezeBertTokenizer:
    if not has_tokenizer(folder):
        raise SbexportError(f"{folder}: the artifact has no tokenizer (tokenizer.json); export it from a "
                            f"checkpoint that has one")
    return SqueezeBertTokenizer.from_pretrained(folder)


def _texts(task, text, text_pair, dims):
    """Batch the inputs: one row, or one row per ending for multiple choice (as many as the
    file's `dims` allow)."""
    if task.head != "multiple-choice":
        return [text], ([text_pair] if text_pair is not None else None)
    endings = [e.strip() for e in text_pair.split(CHOICE_SEPARATOR) if e.strip()]
    lo, hi = dims.choices or (1, len(endings) or 1)
    if not lo <= len(endings) <= hi:
        takes = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
        raise SbexportError(f"this file takes {takes} endings separated by {CHOICE_SEPARATOR!r}, got {len(endings)}")
    return [text] * len(endings), endings


def _warn_if_truncated(tokenizer, first, second, max_seq) -> None:
    full = tokenizer(first, second)
    longest = max(len(ids) for ids in full["input_ids"])
    if longest > max_seq:
        warnings.warn(f"input is {longest} tokens; truncated to the model's maximum of {max_seq}",
                      PredictWarning, stacklevel=3)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _label_names(labels, logits: np.ndarray) -> list[str]:
    """The manifest's `labels`, one per column of `logits` ([..., labels]); raises SbexportError
    when the model file's width differs (open_artifact checked them against config.json only)."""
    if len(labels) != logits.shape[-1]:
        raise SbexportError(f"the model file gives {logits.shape[-1]} scores but the manifest names "
                            f"{len(labels)} labels; re-export the artifact")
    return labels


def _labels(outputs, enc, tokenizer, labels, top_k, text) -> dict:
    logits = outputs["logits"][0]
    labels = _label_names(labels, logits)
    if len(logits) == 1:
        return {"score": float(logits[0])}
    probs = _softmax(logits)
    order = np.argsort(-probs)
    return {"labels": [{"label": labels[i], "score": float(probs[i])} for i in order]}


def _choices(outputs, enc, tokenizer, labels, top_k, text) -> dict:
    probs = _softmax(outputs["logits"][0])
    return {"choices": [{"choice": i, "score": float(p)} for i, p in enumerate(probs)],
            "best": int(probs.argmax())}


def _tags(outputs, enc, tokenizer, labels, top_k, text) -> dict:
    """One label per word piece, with its characters in the text (special tokens skipped)."""
    names = _label_names(labels, outputs["logits"][0])
    labels = outputs["logits"][0].argmax(-1)
    tokens = []
    for i, (start, end) in enumerate(enc["offset_mapping"][0]):
        if end > start:
            tokens.append({"token": text[start:end], "start": int(start), "end": int(end),
                           "label": names[labels[i]]})
    return {"tokens": tokens}


def _span(outputs, enc, tokenizer, labels, top_k, context) -> dict:
    """The best span inside the context (token type 1) with start <= end, at most 30 tokens."""
    start, end = outputs["start_logits"][0], outputs["end_logits"][0]
    in_context = (enc["token_type_ids"][0] == 1) & (enc["attention_mask"][0] == 1)
    in_context &= np.asarray([e > s for s, e in enc["offset_mapping"][0]])
    score = start[:, None] + end[None, :]
    allowed = np.triu(np.ones_like(score, dtype=bool)) & ~np.triu(np.ones_like(score, dtype=bool), MAX_ANSWER_TOKENS)
    allowed &= in_context[:, None] & in_context[None, :]
    if not allowed.any():
        return {"answer": "", "start": 0, "end": 0, "score": None}
    i, j = np.unravel_index(np.where(allowed, score, -np.inf).argmax(), score.shape)
    lo, hi = int(enc["offset_mapping"][0][i][0]), int(enc["offset_mapping"][0][j][1])
    return {"answer": context[lo:hi], "start": lo, "end": hi, "score": float(score[i, j])}


def _masks(outputs, enc, tokenizer, labels, top_k, text) -> dict:
    """Top-k candidates at every [MASK] position."""
    ids = enc["input_ids"][0]
    positions = np.flatnonzero(ids == tokenizer.mask_token_id)
    if not len(positions):
        raise SbexportError(f"fill-mask needs a {tokenizer.convert_ids_to_tokens(tokenizer.mask_token_id)} "
                            f"token in the text")
    logits = outputs["logits"][0][:, :tokenizer.vocab_size]   # rows past the vocabulary are unused
    result = []
    for pos in positions:
        probs = _softmax(logits[pos])
        best = np.argsort(-probs)[:top_k]
        result.append([{"token": tokenizer.convert_ids_to_tokens(int(t)), "score": float(probs[t])} for t in best])
    return {"masks": result}


def _features(outputs, enc, tokenizer, labels, top_k, text) -> dict:
    pooled = outputs["pooler_output"][0]
    return {"last_hidden_state_shape": list(outputs["last_hidden_state"].shape),
            "pooler_output": [round(float(v), 6) for v in pooled[:8]] + (["..."] if len(pooled) > 8 else [])}


DECODERS = {"sequence-classification": _labels, "multiple-choice": _choices, "token-classification": _tags,
            "question-answering": _span, "masked-lm": _masks, "base": _features}
