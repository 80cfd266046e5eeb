"""Metrics of the evaluated tasks, written out so that they can be checked by hand: accuracy,
binary F1, Matthews correlation, Pearson and Spearman correlation, SQuAD v1.1 exact match and
F1 (the official script's normalisation), and CoNLL entity-level F1 over BIO spans.

Every score is a fraction (0..1; -1..1 for correlations), not a percentage. A score that is
undefined (a correlation of a constant) is nan.

Which metrics a task reports is the registry's to say (tasks.py: Task.metrics, Head.score);
the three scorers here share one signature, (names, gold, pred, positive) -> {name: value}.

Why not scikit-learn, scipy or seqeval: they would become runtime dependencies (scikit-learn
and scipy weigh tens of MB) for about 100 lines of arithmetic that a reader can check; the
reading of IOB1 and IOB2 tags is stated in entity_spans rather than left to a library's mode.
The tests check these functions against scikit-learn and scipy (the test extra) and by hand.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np


def score_labels(names: Sequence[str], gold: Sequence, pred: Sequence, positive=None) -> dict[str, float]:
    """The metrics `names` (accuracy, f1, matthews_corr, pearson, spearman) of a classifier's
    label names (`positive` names the positive class of F1) or a regression's floats."""
    functions = {"accuracy": lambda: accuracy(gold, pred), "f1": lambda: binary_f1(gold, pred, positive),
                 "matthews_corr": lambda: matthews_corrcoef(gold, pred),
                 "pearson": lambda: pearson(gold, pred), "spearman": lambda: spearman(gold, pred)}
    return {name: functions[name]() for name in names}


def score_answers(names: Sequence[str], gold: Sequence, pred: Sequence, positive=None) -> dict[str, float]:
    """SQuAD's exact_match and f1 of answer strings `pred` against lists of answers `gold`,
    averaged over the questions. `positive` is unused (the signature every scorer shares)."""
    functions = {"exact_match": squad_exact_match, "f1": squad_f1}
    return {name: _mean(functions[name](p, g) for p, g in zip(pred, gold)) for name in names}


def score_entities(names: Sequence[str], gold: Sequence, pred: Sequence, positive=None) -> dict[str, float]:
    """entity_f1, entity_precision and entity_recall of tag lists per sentence (entity_scores).
    `positive` is unused (the signature every scorer shares)."""
    scores = entity_scores(gold, pred)
    return {name: scores[name.removeprefix("entity_")] for name in names}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


# -- classification ---------------------------------------------------------------------------

def accuracy(gold: Sequence, pred: Sequence) -> float:
    """Fraction of predictions equal to the gold label."""
    return _mean(float(g == p) for g, p in zip(gold, pred))


def binary_f1(gold: Sequence, pred: Sequence, positive) -> float:
    """F1 of the `positive` class: 2 tp / (2 tp + fp + fn); 0 when there is no positive at all."""
    tp = sum(g == positive and p == positive for g, p in zip(gold, pred))
    fp = sum(g != positive and p == positive for g, p in zip(gold, pred))
    fn = sum(g == positive and p != positive for g, p in zip(gold, pred))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def matthews_corrcoef(gold: Sequence, pred: Sequence) -> float:
    """Matthews correlation, in its multi-class form (Gorodkin 2004), which for two classes is
    (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)). 0 when a marginal is constant."""
    classes = sorted(set(gold) | set(pred), key=str)
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)))      # [gold, pred]
    for g, p in zip(gold, pred):
        confusion[index[g], index[p]] += 1
    s, c = confusion.sum(), np.trace(confusion)
    t, p = confusion.sum(1), confusion.sum(0)                # true / predicted counts per class
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denominator) if denominator else 0.0


# -- regression -------------------------------------------------------------------------------

def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; nan when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx @ dx) * (dy @ dy))
    return float(dx @ dy / denominator) if denominator else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman correlation: Pearson of the ranks, ties given their average rank."""
    return pearson(_ranks(x), _ranks(y))


def _ranks(x: Sequence[float]) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (counts - 1) / 2, counts)   # average rank of each tie group
    return ranks


# -- SQuAD v1.1 -------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalisation: lowercase, drop punctuation, drop the articles
    a / an / the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised answer."""
    return max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best token-overlap F1 of the prediction against any answer."""
    return max(_token_f1(prediction, a) for a in answers)


def _token_f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


# -- CoNLL entities ---------------------------------------------------------------------------

def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one sentence's tags as (type, first word, last word + 1).

    B-X starts an entity; I-X continues the entity before it when that is of type X and starts
    one otherwise (so IOB1 files, where entities begin with I-, read the same as IOB2); O and
    anything else ends it. This is conlleval's reading.
    """
    spans, kind, start = set(), None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, label = tag.partition("-")
        if prefix not in ("B", "I") or not label:
            prefix, label = "O", None
        if kind is not None and (prefix != "I" or label != kind):
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = label, i
    return spans


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 of exact entity matches (type and both ends) over all
    sentences; a partly found entity counts as a miss and a wrong prediction."""
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        gs, ps = entity_spans(g), entity_spans(p)
        tp, n_gold, n_pred = tp + len(gs & ps), n_gold + len(gs), n_pred + len(ps)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}
