"""Predict with an exported artifact: tokenize with its own tokenizer, run its model file,
decode with its head's decoder (heads.py: labels with scores, answer span, tagged tokens,
masked-word candidates, or the embedding). A text longer than the file's maximum sequence is
truncated with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .artifact import open_artifact
from .errors import SbexportError
from .heads import CHOICE_SEPARATOR, INPUT_NAMES
from .runtime import open_runner, run_rows
from .tasks import get_task
from .tokenizer import SqueezeBertTokenizer, has_tokenizer


class PredictWarning(UserWarning):
    """Something the user should know about a prediction (its text was truncated)."""


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
    texts = (text, _endings(text_pair, manifest.dims) if task.head.choices else text_pair)
    _check_tokens(tokenizer, texts)
    reason = task.head.unfit(tokenizer, texts, max_seq)
    if reason:
        raise SbexportError(reason)
    from .export.quantize import saturation_note

    note = saturation_note(manifest)
    if note:
        warnings.warn(note, PredictWarning, stacklevel=2)
    encoded = task.head.encode(tokenizer, [texts], max_seq, windows=True)
    if encoded.lengths[0] > max_seq:
        warnings.warn(f"input is {encoded.lengths[0]} tokens; truncated to the model's maximum of {max_seq}",
                      PredictWarning, stacklevel=2)
    lo, hi = manifest.dims.batch         # a long context's windows are rows of one batch
    runner = open_runner(folder / manifest.model_file, INPUT_NAMES)
    outputs = dict(zip(task.outputs, run_rows(runner.run, encoded.feeds, hi, fixed=lo == hi)))
    return {"task": task.name, **task.head.decode(outputs, encoded.example(0), texts, labels=list(manifest.labels),
                                                  tokenizer=tokenizer, top_k=top_k)}


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
        raise SbexportError(f"task {task.name} {task.head.one_text}; got a second text (TEXT_PAIR): join them "
                            f"into one or use a pair task such as mnli")
    if task.head.second_text and text_pair is None:
        raise SbexportError(f"task {task.name} needs a second text ({task.head.second_text})")


def _check_tokens(tokenizer: SqueezeBertTokenizer, texts) -> None:
    """Raise SbexportError for a text (or a multiple-choice ending) of which the tokenizer keeps
    nothing: zero-width, control or unassigned characters only, which pass the blank check but
    would run the model on [CLS] [SEP] alone."""
    first, second = texts
    seconds = [] if second is None else [second] if isinstance(second, str) else second
    for name, value in [("TEXT", first)] + [("TEXT_PAIR", s) for s in seconds]:
        if not tokenizer.tokenize(value):
            raise SbexportError(f"{name} has no tokens: the tokenizer drops each of its characters (zero-width, "
                                f"control or unassigned ones); give at least one word")


def _undecodable(char: str) -> str:
    """'the byte 0xff' for a surrogate escape (U+DC80..U+DCFF), else the code point."""
    code = ord(char)
    return f"the byte {code - 0xDC00:#04x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}, a lone surrogate"


def _tokenizer(folder: Path) -> SqueezeBertTokenizer:
    if not has_tokenizer(folder):
        raise SbexportError(f"{folder}: the artifact has no tokenizer (tokenizer.json); export it from a "
                            f"checkpoint that has one")
    return SqueezeBertTokenizer.from_pretrained(folder)


def _endings(text_pair: str, dims) -> list[str]:
    """The endings of a multiple-choice question, '|'-separated in `text_pair`; raises
    SbexportError when their count is outside the file's choices dimension (`dims`, the
    manifest's)."""
    endings = [e.strip() for e in text_pair.split(CHOICE_SEPARATOR) if e.strip()]
    lo, hi = dims.choices or (1, len(endings) or 1)
    if not lo <= len(endings) <= hi:
        takes = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
        raise SbexportError(f"this file takes {takes} endings separated by {CHOICE_SEPARATOR!r}, got {len(endings)}")
    return endings
