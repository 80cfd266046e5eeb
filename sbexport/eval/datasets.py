"""Readers for labelled evaluation files. Each returns a Dataset: the valid examples, and the
rows it skipped with where they are (line, or position in the JSON) and why. A malformed row
never stops a run; only a file that cannot be read at all raises.

Formats (users supply the files; see benchmarks/EVAL.md for where the dev sets come from):
  glue   GLUE's TSV layout, columns found by their header name (the task's GlueColumns in
         tasks.py; CoLA's dev.tsv has no header)
  jsonl  one JSON object a line: {"text": ..., "text_pair": ..., "label": ...}
  squad  SQuAD v1.1 JSON: data[].paragraphs[] with a context and qas[] with answers[].text
  conll  CoNLL-2003: a token a line, its tag in the last column, a blank line between
         sentences, -DOCSTART- lines skipped

Labels stay the strings of the file here (numbers for STS-B); evaluate maps them onto the
model's labels, since only the model knows its label order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SbexportError
from ..tasks import Task, evaluable_tasks

FORMATS = ("glue", "jsonl", "squad", "conll")   # which a task takes: its head's eval_formats (heads.py)


@dataclass(frozen=True)
class TextExample:
    """A text (or pair) with its label: a string of the file, or a float for regression."""
    text: str
    text_pair: str | None
    label: str | float
    where: str

    @property
    def texts(self) -> tuple[str, str | None]:
        """What the model reads (heads.Texts)."""
        return self.text, self.text_pair


@dataclass(frozen=True)
class QAExample:
    """A SQuAD question with its context and every accepted answer text."""
    qid: str
    question: str
    context: str
    answers: tuple[str, ...]
    where: str

    @property
    def texts(self) -> tuple[str, str]:
        """What the model reads: the question, then the context its answer is cut from."""
        return self.question, self.context


@dataclass(frozen=True)
class TagExample:
    """A CoNLL sentence: its words and one tag per word."""
    words: tuple[str, ...]
    tags: tuple[str, ...]
    where: str

    @property
    def texts(self) -> tuple[str, None]:
        """What the model reads: the words joined with single spaces (runners.word_tags
        relies on it to find each word's first piece)."""
        return " ".join(self.words), None


@dataclass(frozen=True)
class Malformed:
    where: str        # "line 12" or "data[0].paragraphs[3].qas[1]"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Dataset:
    path: str
    format: str
    examples: list = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.malformed.append(Malformed(where, reason))


def read_dataset(path: str | Path, task: Task, fmt: str = "auto") -> Dataset:
    """Read the labelled file at `path` for `task` in format `fmt` ("auto" picks one from the
    task and the file's name). Returns a Dataset. Raises SbexportError when the file is missing,
    the format is unknown or does not fit the task, or the file cannot be read at all (not JSON,
    no header with the task's columns); row-level problems are recorded, not raised."""
    path = Path(path)
    formats = task.head.eval_formats
    if not formats:
        raise SbexportError(f"eval has no metric for task {task.name} ({task.head.name}); "
                            f"it scores {', '.join(evaluable_tasks())}")
    if fmt != "auto" and fmt not in FORMATS:
        raise SbexportError(f"unknown format {fmt!r}; expected auto, {', '.join(FORMATS)}")
    if not path.is_file():
        raise SbexportError(f"{path}: no such data file" if not path.exists() else f"{path}: not a file")
    fmt = detect_format(path, task) if fmt == "auto" else fmt
    if fmt not in formats:
        raise SbexportError(f"format {fmt} does not fit task {task.name}; it takes {' or '.join(formats)}")
    return READERS[fmt](path, task)


def detect_format(path: Path, task: Task) -> str:
    """The task fixes the format when its head takes one; between GLUE and JSON lines (the
    classifiers') the suffix (.tsv, .jsonl) or else the first character ('{' for JSON lines)
    decides."""
    if len(task.head.eval_formats) == 1:
        return task.head.eval_formats[0]
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "glue"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    with open(path, "rb") as f:
        return "jsonl" if f.read(4096).lstrip().startswith(b"{") else "glue"


def _lines(path: Path):
    """Yield (line number, text) of a file read as UTF-8; a line that is not UTF-8 yields its
    error as text None, so that a reader can count it as malformed and go on."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # MRPC's files start with a byte-order mark
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            yield number, raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            yield number, None


# -- GLUE TSV ---------------------------------------------------------------------------------

def read_glue(path: Path, task: Task) -> Dataset:
    """GLUE dev TSV: a header row (none in CoLA's), then one tab-separated row per example.
    Fields are not quoted in GLUE's files, so a line splits on tabs alone."""
    if task.glue is None:
        raise SbexportError(f"task {task.name} has no GLUE file layout")
    dataset = Dataset(str(path), "glue")
    rows = ((n, line) for n, line in _lines(path) if line is None or line.strip())
    header = None
    for number, line in rows:
        if line is None:
            dataset.skip(f"line {number}", "not UTF-8 text")
            continue
        header = line.split("\t")
        break
    if header is None:
        return dataset
    first, second, label = task.glue.first, task.glue.second, task.glue.label
    if task.glue.no_header and not {c for c in (first, second, label) if c} <= set(header):
        # A file without a header (CoLA's own): the first line is a row of no_header columns.
        rows = _chain([(number, line)], rows)
        header = list(task.glue.no_header)
    missing = [c for c in (first, second, label) if c is not None and c not in header]
    if missing:
        raise SbexportError(f"{path}: not a GLUE {task.name} file: the header has no column "
                            f"{', '.join(repr(c) for c in missing)} (it has {', '.join(header[:12])})")
    index = {name: header.index(name) for name in (first, second, label) if name is not None}
    for number, line in rows:
        where = f"line {number}"
        if line is None:
            dataset.skip(where, "not UTF-8 text")
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            dataset.skip(where, f"{len(fields)} tab-separated fields, the header has {len(header)}")
            continue
        texts = [fields[index[c]].strip() if c else None for c in (first, second)]
        raw_label = fields[index[label]].strip()
        empty = [c for c, t in zip((first, second), texts) if c and not t]
        if empty:
            dataset.skip(where, f"empty {empty[0]}")
        elif not raw_label:
            dataset.skip(where, f"empty {label}")
        else:
            _add_text(dataset, task, texts[0], texts[1], raw_label, where)
    return dataset


def _chain(head: list, rest):
    yield from head
    yield from rest


def _add_text(dataset: Dataset, task: Task, text: str, pair: str | None, label, where: str) -> None:
    """Append a TextExample, parsing the label as a number for regression."""
    if task.problem_type == "regression":
        try:
            label = float(label)
        except (TypeError, ValueError):
            dataset.skip(where, f"score {label!r} is not a number")
            return
        if label != label or label in (float("inf"), float("-inf")):
            dataset.skip(where, f"score {label!r} is not a finite number")
            return
    dataset.examples.append(TextExample(text, pair, label, where))


# -- JSON lines -------------------------------------------------------------------------------

def read_jsonl(path: Path, task: Task) -> Dataset:
    """One object a line with "text", "label" and, for pair tasks, "text_pair". A label may be
    a label name or the index GLUE uses for it (0 / 1 / 2); a score for STS-B."""
    dataset = Dataset(str(path), "jsonl")
    for number, line in _lines(path):
        where = f"line {number}"
        if line is None:
            dataset.skip(where, "not UTF-8 text")
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            dataset.skip(where, f"not JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            dataset.skip(where, "not a JSON object")
            continue
        text, pair, label = row.get("text"), row.get("text_pair"), row.get("label")
        if not isinstance(text, str) or not text.strip():
            dataset.skip(where, "no \"text\" string")
        elif task.pair and (not isinstance(pair, str) or not pair.strip()):
            dataset.skip(where, f"no \"text_pair\" string (task {task.name} takes text pairs)")
        elif not task.pair and pair is not None:
            dataset.skip(where, f"\"text_pair\" given but task {task.name} takes one text")
        elif isinstance(label, bool) or not isinstance(label, (str, int, float)) or label == "":
            dataset.skip(where, "no \"label\" (a label name, index or score)")
        else:
            _add_text(dataset, task, text.strip(), pair.strip() if task.pair else None,
                      label if task.problem_type == "regression" else str(label).strip(), where)
    return dataset


# -- SQuAD v1.1 JSON --------------------------------------------------------------------------

def read_squad(path: Path, task: Task) -> Dataset:
    """SQuAD v1.1 (dev-v1.1.json). Questions without answers (SQuAD v2's unanswerable ones)
    are malformed here: v1.1 metrics have no way to score them."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise SbexportError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SbexportError(f"{path}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SbexportError(f"{path}: not SQuAD JSON (no top-level \"data\" list)")
    dataset = Dataset(str(path), "squad")
    for i, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            dataset.skip(f"data[{i}]", "no \"paragraphs\" list")
            continue
        for j, paragraph in enumerate(paragraphs):
            _read_paragraph(dataset, paragraph, f"data[{i}].paragraphs[{j}]")
    return dataset


def _read_paragraph(dataset: Dataset, paragraph, where: str) -> None:
    qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
    context = paragraph.get("context") if isinstance(paragraph, dict) else None
    if not isinstance(qas, list):
        dataset.skip(where, "no \"qas\" list")
        return
    for k, qa in enumerate(qas):
        at = f"{where}.qas[{k}]"
        if not isinstance(context, str) or not context.strip():
            dataset.skip(at, "the paragraph has no \"context\" text")
            continue
        if not isinstance(qa, dict):
            dataset.skip(at, "not a JSON object")
            continue
        question, answers = qa.get("question"), qa.get("answers")
        texts = tuple(a["text"] for a in answers if isinstance(a, dict) and isinstance(a.get("text"), str)) \
            if isinstance(answers, list) else ()
        if not isinstance(question, str) or not question.strip():
            dataset.skip(at, "no \"question\" text")
        elif not texts:
            dataset.skip(at, "no answers (unanswerable SQuAD v2 questions are not scored)")
        else:
            dataset.examples.append(QAExample(str(qa.get("id", at)), question.strip(), context, texts, at))


# -- CoNLL-2003 -------------------------------------------------------------------------------

def read_conll(path: Path, task: Task) -> Dataset:
    """CoNLL-2003 (eng.testa / eng.testb or the same layout): whitespace-separated columns, the
    word first and its tag last. A sentence with a malformed line is skipped whole, since its
    tags would no longer line up with its words."""
    dataset = Dataset(str(path), "conll")
    words, tags, start, bad = [], [], 0, None

    def end_sentence():
        if words and bad is None:
            dataset.examples.append(TagExample(tuple(words), tuple(tags), f"line {start}"))
        elif bad is not None:
            dataset.skip(*bad)

    for number, line in _lines(path):
        if line is not None and (not line.strip() or line.startswith("-DOCSTART-")):
            end_sentence()
            words, tags, bad = [], [], None
            continue
        if not words and bad is None:
            start = number
        fields = line.split() if line is not None else []
        if line is None:
            bad = bad or (f"line {number}", "not UTF-8 text")
        elif len(fields) < 2:
            bad = bad or (f"line {number}", "one column; expected a word and its tag")
        words.append(fields[0] if fields else "")
        tags.append(fields[-1] if fields else "")
    end_sentence()
    return dataset


READERS = {"glue": read_glue, "jsonl": read_jsonl, "squad": read_squad, "conll": read_conll}
