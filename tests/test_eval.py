"""sbexport eval: the readers on small files written here (malformed rows included), every
metric on hand-computed cases, and end to end a tiny checkpoint (random weights, a tiny
vocab.txt) evaluated in PyTorch and through an ONNX artifact: same predictions, delta 0.
Bad input fails with one clear line."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_squeezebert_config
from scipy import stats

from sbexport.checkpoints import save_pretrained
from sbexport.cli import cli, main
from sbexport.errors import SbexportError
from sbexport.eval import SCHEMA, read_dataset, report_json, run_eval
from sbexport.eval.datasets import QAExample, TagExample, TextExample
from sbexport.eval.evaluate import map_label
from sbexport.eval.runners import predict_examples, pytorch_runner, word_tags
from sbexport.metrics import (
    accuracy,
    binary_f1,
    entity_scores,
    entity_spans,
    matthews_corrcoef,
    normalize_answer,
    pearson,
    spearman,
    squad_exact_match,
    squad_f1,
)
from sbexport.source import resolve_source
from sbexport.tasks import TASKS, get_task
from sbexport.tokenizer import SqueezeBertTokenizer

WORDS = ("a the cat dog sat on mat man plays guitar someone makes music is not good bad movie great "
         "who what where did go paris john lives in london eu rejects german call to boycott british "
         "lamb peter blackburn").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ",", "?", "'", "-", "##s"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def sentence(rng, lo=2, hi=9) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(lo, hi)))


# -- readers ----------------------------------------------------------------------------------

def test_glue_mnli_columns_by_header_and_malformed_rows(tmp_path):
    path = write(tmp_path / "dev_matched.tsv",
                 "index\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
                 "0\tfiction\tA man plays.\tSomeone makes music.\tneutral\tentailment\n"
                 "1\tfiction\tThe cat sat.\t\tneutral\tneutral\n"            # empty sentence2
                 "2\tfiction\ttoo few fields\n"
                 "\n"
                 "3\tfiction\tThe dog sat.\tA cat sat.\tneutral\tcontradiction\n")
    data = read_dataset(path, get_task("mnli"))
    assert data.format == "glue"
    assert data.examples == [TextExample("A man plays.", "Someone makes music.", "entailment", "line 2"),
                             TextExample("The dog sat.", "A cat sat.", "contradiction", "line 6")]
    assert [(m.where, m.reason) for m in data.malformed] == [
        ("line 3", "empty sentence2"), ("line 4", "3 tab-separated fields, the header has 6")]


def test_glue_sst2_mrpc_stsb_and_headerless_cola(tmp_path):
    sst2 = read_dataset(write(tmp_path / "sst2.tsv", "sentence\tlabel\nit is great \t1\nbad movie\t0\n"),
                        get_task("sst2"))
    assert [(e.text, e.text_pair, e.label) for e in sst2.examples] == [("it is great", None, "1"),
                                                                        ("bad movie", None, "0")]
    # MRPC's file starts with a byte-order mark.
    mrpc = read_dataset(write(tmp_path / "mrpc.tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                              "1\t11\t12\tA cat.\tThe cat.\n"), get_task("mrpc"))
    assert [(e.text, e.text_pair, e.label) for e in mrpc.examples] == [("A cat.", "The cat.", "1")]
    stsb = read_dataset(write(tmp_path / "stsb.tsv", "index\tgenre\tsentence1\tsentence2\tscore\n"
                              "0\tnews\ta\tb\t3.8\n1\tnews\ta\tb\thigh\n"), get_task("stsb"))
    assert [e.label for e in stsb.examples] == [3.8]
    assert [str(m) for m in stsb.malformed] == ["line 3: score 'high' is not a number"]
    cola = read_dataset(write(tmp_path / "dev.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\nonly\n"),
                        get_task("cola"))
    assert [(e.text, e.label, e.where) for e in cola.examples] == [("The cat sat.", "1", "line 1"),
                                                                   ("Cat the sat.", "0", "line 2")]
    assert [m.where for m in cola.malformed] == ["line 3"]


def test_glue_file_of_another_task_is_a_clear_error(tmp_path):
    path = write(tmp_path / "sst2.tsv", "sentence\tlabel\nit is great\t1\n")
    with pytest.raises(SbexportError, match=r"not a GLUE mnli file: the header has no column 'sentence1', "
                                            r"'sentence2', 'gold_label'"):
        read_dataset(path, get_task("mnli"))


def test_jsonl_rows(tmp_path):
    path = write(tmp_path / "rte.jsonl", "\n".join([
        json.dumps({"text": "A cat sat.", "text_pair": "A cat.", "label": "entailment"}),
        json.dumps({"text": "A cat sat.", "text_pair": "A dog.", "label": 1}),
        "{not json",
        json.dumps({"text": "no pair", "label": 0}),
        json.dumps(["a list"]),
        json.dumps({"text": "A", "text_pair": "B", "label": True}),
        ""]))
    data = read_dataset(path, get_task("rte"))
    assert data.format == "jsonl"
    assert [(e.text_pair, e.label) for e in data.examples] == [("A cat.", "entailment"), ("A dog.", "1")]
    assert [m.where for m in data.malformed] == ["line 3", "line 4", "line 5", "line 6"]
    assert "text_pair" in data.malformed[1].reason


def test_squad_json(tmp_path):
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": "John lives in Paris.", "qas": [
            {"id": "q1", "question": "Where does John live?", "answers": [{"text": "Paris", "answer_start": 14},
                                                                          {"text": "in Paris", "answer_start": 11}]},
            {"id": "q2", "question": "Who?", "answers": [], "is_impossible": True},
            {"id": "q3", "answers": [{"text": "John"}]}]},
        {"qas": [{"id": "q4", "question": "What?", "answers": [{"text": "x"}]}]}]}]}
    data = read_dataset(write(tmp_path / "dev-v1.1.json", json.dumps(squad)), get_task("squad"))
    assert data.examples == [QAExample("q1", "Where does John live?", "John lives in Paris.", ("Paris", "in Paris"),
                                       "data[0].paragraphs[0].qas[0]")]
    assert [str(m) for m in data.malformed] == [
        "data[0].paragraphs[0].qas[1]: no answers (unanswerable SQuAD v2 questions are not scored)",
        "data[0].paragraphs[0].qas[2]: no \"question\" text",
        "data[0].paragraphs[1].qas[0]: the paragraph has no \"context\" text"]


def test_conll_sentences_docstart_and_malformed_lines(tmp_path):
    path = write(tmp_path / "eng.testa", "-DOCSTART- -X- -X- O\n\n"
                 "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"
                 "Peter NNP B-NP B-PER\nbroken\nBlackburn NNP B-NP I-PER\n\n"
                 "London NNP B-NP I-LOC\n")
    data = read_dataset(path, get_task("ner"))
    assert data.format == "conll"
    assert data.examples == [TagExample(("EU", "rejects", "German"), ("B-ORG", "O", "B-MISC"), "line 3"),
                             TagExample(("London",), ("I-LOC",), "line 11")]
    assert [str(m) for m in data.malformed] == ["line 8: one column; expected a word and its tag"]


def test_every_registered_task_is_scored_or_refused_clearly(tmp_path):
    path = write(tmp_path / "x.jsonl", "{}\n")
    for task in TASKS.values():
        if task.head.eval_formats:
            continue
        with pytest.raises(SbexportError, match=f"eval has no metric for task {task.name}"):
            read_dataset(path, task)
    assert {t.name for t in TASKS.values() if t.head.eval_formats} >= {"mnli", "stsb", "squad", "ner", "cola"}


def test_map_label_by_name_and_glue_index():
    task = get_task("sst2")
    assert map_label("Positive", ["negative", "positive"], task) == "positive"
    assert map_label("1", ["negative", "positive"], task) == "positive"
    assert map_label("1", ["neg", "pos"], task) == "pos"            # a checkpoint's own names
    assert map_label("0", ["positive", "negative"], task) == "negative"  # by name, not position
    with pytest.raises(ValueError, match="label '7' is not one of"):
        map_label("7", ["negative", "positive"], task)
    # an index means nothing across label sets of other sizes (an mnli classifier under sst2)
    with pytest.raises(ValueError, match="index of sst2's 2 labels, but the model has 3"):
        map_label("1", ["entailment", "neutral", "contradiction"], task)


# -- metrics ----------------------------------------------------------------------------------

def test_classification_metrics_by_hand():
    gold = ["p", "p", "p", "n", "n", "n", "n", "p"]
    pred = ["p", "p", "n", "n", "p", "n", "n", "p"]
    # tp 3, fn 1, fp 1, tn 3
    assert accuracy(gold, pred) == 6 / 8
    assert binary_f1(gold, pred, "p") == 2 * 3 / (2 * 3 + 1 + 1)
    assert matthews_corrcoef(gold, pred) == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4))
    assert matthews_corrcoef(gold, ["p"] * 8) == 0.0          # constant prediction
    assert binary_f1(["n", "n"], ["n", "n"], "p") == 0.0


def test_correlations_by_hand_and_against_scipy():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 2, 3, 4], [10, 20, 20, 40]) == pytest.approx(stats.spearmanr([1, 2, 3, 4], [10, 20, 20, 40])[0])
    assert spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50).round(1)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])


def test_squad_normalisation_exact_match_and_f1():
    assert normalize_answer("The  Eiffel-Tower, in PARIS!") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"          # articles only as whole words
    assert squad_exact_match("the Paris.", ["Paris", "in Paris"]) == 1.0
    assert squad_exact_match("Paris France", ["Paris"]) == 0.0
    # "paris france" against "in paris": common 1, precision 1/2, recall 1/2 -> 0.5; against "paris": 2/3
    assert squad_f1("Paris France", ["in Paris", "Paris"]) == pytest.approx(2 / 3)
    assert squad_f1("a", ["Paris"]) == 0.0                    # normalises to nothing


def test_entity_spans_and_f1_with_partial_spans():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG"]) == {
        ("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6)}
    # IOB1 (CoNLL-2003's own files): an entity starts with I-.
    assert entity_spans(["I-PER", "I-PER", "O", "I-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]   # PER found only in part
    scores = entity_scores(gold, pred)
    # gold 3 entities, predicted 4 (PER 0-1 is a wrong entity), 2 exact.
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert entity_scores([["O"]], [["O"]])["f1"] == 0.0


def test_word_tags_take_the_first_piece_of_each_word():
    tokens = [{"start": 0, "label": "B-ORG"}, {"start": 3, "label": "O"}, {"start": 7, "label": "I-ORG"}]
    assert word_tags(tokens, ["EU", "rejects", "x", "German"]) == ["B-ORG", "O", "O", "O"]


# -- end to end -------------------------------------------------------------------------------

def tiny_model(task_name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny SqueezeBERT for the task with every weight random (std 0.2, so that logits are
    far apart compared with fp32 noise)."""
    task = get_task(task_name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = task.model_class()(tiny_squeezebert_config(**task.config_overrides()))
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(std=0.2)
    return model.eval()


def tiny_checkpoint(folder: Path, task_name: str, seed: int = 0) -> Path:
    """The tiny model saved as a checkpoint, with a vocab.txt that fits its 99 embedding rows."""
    save_pretrained(tiny_model(task_name, seed), folder)
    write(folder / "vocab.txt", "\n".join(VOCAB) + "\n")
    return folder


@pytest.fixture(scope="module")
def mnli_files(tmp_path_factory):
    """A checkpoint, its ONNX artifact (one export for the whole file) and a dev file with 37
    valid rows (a batch of 16 and a short last batch) and two malformed ones."""
    from sbexport.export import export_artifact

    root = tmp_path_factory.mktemp("mnli")
    checkpoint = tiny_checkpoint(root / "checkpoint", "mnli")
    artifact = export_artifact("onnx", get_task("mnli"), resolve_source(get_task("mnli"), model=str(checkpoint)),
                               root / "mnli-onnx", verify=False, log=lambda _: None)
    rng = np.random.default_rng(0)
    labels = ("entailment", "neutral", "contradiction")
    rows = [f"{i}\t{sentence(rng, 3, 40)}.\t{sentence(rng)}\t{labels[i % 3]}" for i in range(37)]
    rows[5] = "5\t" + " ".join(["cat"] * 80) + "\tdog\tneutral"      # longer than the 64 positions
    rows.insert(10, "x\tbroken row")
    rows.append("38\ta cat\ta dog\tmaybe")
    data = write(root / "dev_matched.tsv", "index\tsentence1\tsentence2\tgold_label\n" + "\n".join(rows) + "\n")
    return checkpoint, artifact, data


def test_pytorch_and_onnx_agree(mnli_files):
    checkpoint, artifact, data = mnli_files
    report = run_eval("mnli", data, model=str(checkpoint), artifacts=(str(artifact),), log=lambda _: None)
    torch_run, onnx_run = report.runners
    assert report.examples == 37 and len(report.malformed) == 2
    assert [m.where for m in report.malformed] == ["line 12", "line 40"]
    assert (torch_run.kind, onnx_run.kind) == ("pytorch", "onnx")
    assert onnx_run.agree == onnx_run.compared == 37
    assert onnx_run.metrics["accuracy"] == pytest.approx(torch_run.metrics["accuracy"], abs=1e-12)
    assert onnx_run.delta == {"accuracy": pytest.approx(0.0, abs=1e-12)}
    assert torch_run.truncated == onnx_run.truncated == 1
    assert 0.0 <= torch_run.metrics["accuracy"] <= 1.0 and onnx_run.examples_per_second > 0


def test_cli_eval_prints_table_and_writes_json(mnli_files, tmp_path):
    checkpoint, artifact, data = mnli_files
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(cli, ["eval", "--task", "mnli", "--data", str(data), "--artifact", str(artifact),
                                      "--limit", "20", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "delta vs pytorch" in result.output and "100.00% (20/20 examples)" in result.output
    assert "skipped 2 malformed rows: line 12:" in result.output
    report = json.loads(out.read_text())
    assert report["schema"] == SCHEMA == "sbexport.eval/1"
    assert report["data"]["examples"] == 20 and report["data"]["malformed"]["count"] == 2
    assert [r["kind"] for r in report["runners"]] == ["pytorch", "onnx"]
    assert report["runners"][1]["agreement"] == 1.0
    assert report["reference"]["checkpoint"] == str(checkpoint)   # rebuilt from the manifest
    assert not list(tmp_path.glob(".*"))                          # no temporary file left


def test_artifact_of_another_task_is_refused(mnli_files):
    _, artifact, _ = mnli_files
    with pytest.raises(SbexportError, match=r"the artifact is a mnli export, not sst2; evaluate it with --task mnli"):
        run_eval("sst2", write(artifact.parent / "sst2.tsv", "sentence\tlabel\na cat\t1\n"), artifacts=(str(artifact),))


def test_fixed_batch_pads_the_last_batch(tmp_path):
    """An ExecuTorch file takes exactly its manifest's batch: 7 rows in batches of 4 give the
    predictions of one free batch."""
    task = get_task("stsb")
    model = tiny_model("stsb")
    tokenizer = SqueezeBertTokenizer(write(tmp_path / "vocab.txt", "\n".join(VOCAB) + "\n"))
    rng = np.random.default_rng(1)
    examples = [TextExample(sentence(rng), sentence(rng), 2.5, f"line {i}") for i in range(7)]
    free = pytorch_runner(model, task, tokenizer, 64, 16)
    fixed = pytorch_runner(model, task, tokenizer, 64, 4)
    fixed.fixed_batch, calls = True, []
    run = fixed.run
    fixed.run = lambda feeds: calls.append(feeds["input_ids"].shape[0]) or run(feeds)
    expected = predict_examples(free, task, examples).values
    got = predict_examples(fixed, task, examples).values
    assert set(calls) == {4}
    assert got == pytest.approx(expected, abs=1e-5)


def test_squad_and_ner_in_pytorch(tmp_path):
    squad = {"data": [{"paragraphs": [{"context": "John lives in Paris. The cat sat on the mat.", "qas": [
        {"id": f"q{i}", "question": q, "answers": [{"text": a}]}
        for i, (q, a) in enumerate([("Where does John live?", "Paris"), ("Who sat?", "the cat"),
                                    (" ".join(["who"] * 70), "mat")])]}]}]}
    data = write(tmp_path / "dev-v1.1.json", json.dumps(squad))
    checkpoint = tiny_checkpoint(tmp_path / "squad", "squad")
    report = run_eval("squad", data, model=str(checkpoint), log=lambda _: None)
    assert report.examples == 2 and set(report.runners[0].metrics) == {"exact_match", "f1"}
    assert "no room for the context" in report.malformed[0].reason     # a 70-token question in 64

    conll = write(tmp_path / "eng.testb", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
                  "German JJ B-NP B-MISC\ncall NN I-NP O\n\nPeter NNP B-NP B-PER\nBlackburn NNP B-NP I-PER\n\n"
                  "London NNP B-NP B-FOO\n")
    checkpoint = tiny_checkpoint(tmp_path / "ner", "ner")
    report = run_eval("ner", conll, model=str(checkpoint), log=lambda _: None)
    assert report.examples == 2 and report.agreement_unit == "word"
    assert report.runners[0].compared == 6
    assert [str(m) for m in report.malformed] == [
        "line 11: tag 'B-FOO' is not one of the model's labels "
        "(O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-MISC, I-MISC)"]
    assert json.loads(report_json(report))["runners"][0]["metrics"].keys() == {
        "entity_f1", "entity_precision", "entity_recall"}


# -- bad input --------------------------------------------------------------------------------

def run_cli(args, capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["sbexport", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--data", "{missing}"], "error: {missing}: no such data file"),
    (["--data", "{tsv}", "--format", "xml"], "error: unknown format 'xml'; expected auto, glue, jsonl, squad, conll"),
    (["--data", "{tsv}", "--format", "squad"], "error: format squad does not fit task sst2; it takes glue or jsonl"),
    (["--data", "{empty}"], "error: {empty}: no valid sst2 rows in this glue file (2 malformed; first: line 2: "
                            "label 'maybe' is not one of the model's labels (negative, positive) or their index)"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch, args, message):
    files = {"missing": tmp_path / "nope.tsv",
             "tsv": write(tmp_path / "sst2.tsv", "sentence\tlabel\na cat\t1\n"),
             "empty": write(tmp_path / "bad.tsv", "sentence\tlabel\na cat\tmaybe\nno label\t\n")}
    args = [a.format(**files) for a in args]
    task = [] if "--task" in args else ["--task", "sst2"]
    checkpoint = tiny_checkpoint(tmp_path / "checkpoint", "sst2")
    code, err = run_cli(["eval", *task, *args, "--model", str(checkpoint)], capsys, monkeypatch)
    assert code == 1
    assert err.startswith(message.format(**files)) and err.count("\n") == 1, err


def test_a_task_without_a_metric_is_not_offered(tmp_path, capsys, monkeypatch):
    """--task's help and choices listed swag, fill-mask and features, which eval then refused."""
    data = write(tmp_path / "d.tsv", "x\n")
    code, err = run_cli(["eval", "--task", "swag", "--data", str(data)], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "'swag' is not one of 'mnli'" in err, err
    assert "swag" not in CliRunner().invoke(cli, ["eval", "--help"]).output


def test_help_has_an_example_and_says_where_dev_sets_come_from():
    text = CliRunner().invoke(cli, ["eval", "--help"]).output
    assert "sbexport eval --task mnli --data" in text
    assert "gluebenchmark.com" in text and "dev-v1.1.json" in text and "CoNLL-2003" in text


# -- the GLUE metrics end to end, against scikit-learn and scipy --------------------------------
#
# A tiny checkpoint scores a file written here; the expected figures come from the model's own
# predictions (run here, one row at a time, with transformers' tokenizer) and scikit-learn /
# scipy. The files are chosen so that a wrong positive class, accuracy in place of Matthews
# correlation, or Pearson in place of Spearman gives another number.

def _checkpoint_and_outputs(folder: Path, task_name: str, rows) -> tuple[Path, np.ndarray]:
    """A tiny checkpoint whose classifier is re-centred on `rows`, and its logits for each
    (text, pair) row, run one row at a time with transformers' tokenizer: [rows, labels].

    A random tiny classifier predicts one class for every input (its bias outweighs what the
    text changes); moving the bias of class 1 by the median logit gap splits the rows about
    evenly, so that every metric sees both classes."""
    from transformers import BertTokenizerFast

    model = tiny_model(task_name)
    tok = BertTokenizerFast(vocab=str(write(folder.parent / f"{folder.name}-vocab.txt", "\n".join(VOCAB) + "\n")))

    def outputs():
        with torch.no_grad():
            return np.stack([model(**tok(text, pair, return_tensors="pt")).logits[0].numpy() for text, pair in rows])
    logits = outputs()
    if logits.shape[1] == 2:
        with torch.no_grad():
            gaps = np.sort(logits[:, 1] - logits[:, 0])
            middle = len(gaps) // 2
            model.classifier.bias[1] -= float(gaps[middle - 1] + gaps[middle]) / 2
        logits = outputs()
    save_pretrained(model, folder)
    write(folder / "vocab.txt", "\n".join(VOCAB) + "\n")
    return folder, logits


def _pairs(rng, n: int) -> list[tuple[str, str]]:
    return [(sentence(rng) + ".", sentence(rng) + ".") for _ in range(n)]


def _clear_decisions(rows: list, logits: np.ndarray) -> tuple[list, np.ndarray]:
    """The rows whose two logits are more than 1e-4 apart (100x the ~1e-6 by which padding in
    eval's batches moves them) and their logits: a class decided by fp32 noise is no test."""
    keep = np.abs(logits[:, 1] - logits[:, 0]) > 1e-4
    assert keep.sum() >= 30, keep.sum()
    return [r for r, k in zip(rows, keep) if k], logits[keep]


def _gold_flipping(predicted: np.ndarray, rng) -> np.ndarray:
    """Gold labels agreeing with `predicted` on about 60% of rows and positive (1) on the rest:
    scores neither 0 nor 1, and more positives than negatives (as in MRPC, 68% positive), so
    that the F1 of one class is far from the other's."""
    return np.where(rng.random(len(predicted)) < 0.6, predicted, 1)


@pytest.mark.parametrize("task_name", ["mrpc", "qqp"])
def test_binary_f1_is_of_the_positive_class(tmp_path, task_name):
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(7)
    rows = _pairs(rng, 40)
    checkpoint, logits = _checkpoint_and_outputs(tmp_path / "ckpt", task_name, rows)
    rows, logits = _clear_decisions(rows, logits)
    predicted = logits.argmax(1)
    gold = _gold_flipping(predicted, rng)
    if task_name == "mrpc":      # 1 = equivalent (the positive class), 0 = not_equivalent
        text = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
            f"{g}\t{i}\t{i + 100}\t{a}\t{b}\n" for i, ((a, b), g) in enumerate(zip(rows, gold)))
    else:                        # 1 = duplicate
        text = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n" + "".join(
            f"{i}\t{i}\t{i + 100}\t{a}\t{b}\t{g}\n" for i, ((a, b), g) in enumerate(zip(rows, gold)))
    data = write(tmp_path / "dev.tsv", text)
    metrics = run_eval(task_name, data, model=str(checkpoint),
                       log=lambda _: None).runners[0].metrics
    expected_f1 = f1_score(gold, predicted, pos_label=1)
    assert abs(expected_f1 - f1_score(gold, predicted, pos_label=0)) > 0.05    # the class matters
    assert set(predicted) == {0, 1}
    assert list(metrics) == ["f1", "accuracy"]
    assert metrics["f1"] == pytest.approx(expected_f1, abs=1e-12)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, predicted), abs=1e-12)


def test_cola_is_scored_by_matthews_correlation(tmp_path):
    from sklearn.metrics import accuracy_score
    from sklearn.metrics import matthews_corrcoef as sk_mcc

    rng = np.random.default_rng(3)
    texts = [sentence(rng) + "." for _ in range(40)]
    checkpoint, logits = _checkpoint_and_outputs(tmp_path / "ckpt", "cola", [(t, None) for t in texts])
    texts, logits = _clear_decisions(texts, logits)
    predicted = logits.argmax(1)
    gold = _gold_flipping(predicted, rng)
    data = write(tmp_path / "dev.tsv", "".join(f"gj04\t{g}\t{'' if g else '*'}\t{t}\n" for t, g in zip(texts, gold)))
    metrics = run_eval("cola", data, model=str(checkpoint),
                       log=lambda _: None).runners[0].metrics
    expected = sk_mcc(gold, predicted)
    assert abs(expected - accuracy_score(gold, predicted)) > 0.05
    assert metrics == {"matthews_corr": pytest.approx(expected, abs=1e-12)}


def test_stsb_is_scored_by_pearson_and_spearman(tmp_path):
    rng = np.random.default_rng(5)
    rows = _pairs(rng, 30)
    checkpoint, logits = _checkpoint_and_outputs(tmp_path / "ckpt", "stsb", rows)
    predicted = logits[:, 0].astype(np.float64)
    # Gold: a steep monotone function of the prediction's rank, plus noise, so that the rank
    # correlation and the linear one differ (measured: Pearson 0.90, Spearman 0.95).
    ranks = np.argsort(np.argsort(predicted)) / (len(predicted) - 1)
    gold = np.round(np.clip(5 * ranks ** 4 + rng.normal(0, 0.1, len(predicted)), 0, 5), 2)
    data = write(tmp_path / "dev.tsv", "index\tgenre\tsentence1\tsentence2\tscore\n" + "".join(
        f"{i}\tnews\t{a}\t{b}\t{g}\n" for i, ((a, b), g) in enumerate(zip(rows, gold))))
    metrics = run_eval("stsb", data, model=str(checkpoint),
                       log=lambda _: None).runners[0].metrics
    pearson_r, spearman_r = stats.pearsonr(gold, predicted)[0], stats.spearmanr(gold, predicted)[0]
    assert abs(pearson_r - spearman_r) > 0.02
    # eval runs padded batches, these rows run alone: outputs differ by ~1e-6 (fp32 sums over
    # another length), which moves a correlation of 30 rows by < 1e-6; 1e-5 leaves a margin.
    assert list(metrics) == ["pearson", "spearman"]
    assert metrics["pearson"] == pytest.approx(pearson_r, abs=1e-5)
    assert metrics["spearman"] == pytest.approx(spearman_r, abs=1e-5)


def test_long_contexts_are_read_in_windows_through_a_fixed_batch(tmp_path):
    """eval's SQuAD examples whose contexts are several windows long: every window runs, in
    calls of exactly the fixed batch (the last filled), and each answer is picked over its own
    example's windows, not a neighbour's."""
    from sbexport.eval.runners import Runner
    from sbexport.tokenizer import SqueezeBertTokenizer

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat",
                                                   "on", "mat", "dog", "ran", "who", "?", "."]) + "\n")
    tokenizer = SqueezeBertTokenizer(tmp_path / "vocab.txt")
    ids = tokenizer.convert_tokens_to_ids(["dog", "ran"])
    calls = []

    def run(feeds):
        calls.append(len(feeds["input_ids"]))
        return [np.where(feeds["input_ids"] == i, 10.0, 0.0).astype(np.float32) for i in ids]
    filler = "the cat sat on the mat . " * 12
    examples = [QAExample("a", "who ran ?", filler + "the dog ran .", ("dog ran",), "a"),
                QAExample("b", "who ran ?", "the dog ran . " + filler, ("dog ran",), "b"),
                QAExample("c", "who sat ?", "the cat sat .", ("cat sat",), "c")]
    runner = Runner("fake", "executorch", run, [], tokenizer, max_seq=24, batch=2, fixed_batch=True)
    predictions = predict_examples(runner, get_task("squad"), examples)
    # c has no "dog": all its logits tie and its first context piece wins, not a neighbour's span
    assert predictions.values == ["dog ran", "dog ran", "the"] and predictions.truncated == 0
    assert set(calls) == {2} and len(calls) > 2 * 3      # the warm-up call and several windows each
