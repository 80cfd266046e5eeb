"""predict: one smoke test per head on the tiny local-checkpoint artifacts (their weights are
random, so only the structure of each answer is checked), and the inputs it must refuse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import EXPORT_TINY
from sbexport import predict as predict_module
from sbexport.errors import SbexportError
from sbexport.predict import predict
from sbexport.tasks import CONLL_LABELS, TASKS

MAX_SEQ = EXPORT_TINY["max_position_embeddings"]


def _assert_distribution(scores):
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert math.isclose(sum(scores), 1.0, abs_tol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "executorch"])
def test_sequence_classification_gives_every_label_with_scores(fmt, onnx_artifact, et_artifact):
    folder = onnx_artifact("mnli", local=True) if fmt == "onnx" else et_artifact("mnli")
    result = predict(folder, "A man plays the guitar.", "Someone makes music.")
    assert result["task"] == "mnli"
    labels = result["labels"]
    assert sorted(r["label"] for r in labels) == sorted(TASKS["mnli"].labels)
    _assert_distribution([r["score"] for r in labels])
    assert [r["score"] for r in labels] == sorted((r["score"] for r in labels), reverse=True)


def test_regression_gives_one_score():
    logits = {"logits": np.array([[0.25]], dtype=np.float32)}
    assert predict_module._labels(logits, None, None, {"labels": ["score"]}, 5, "") == {"score": 0.25}


def test_question_answering_span_lies_in_the_context(onnx_artifact):
    context = "John Smith works at Google in New York. He lives in Paris, France."
    result = predict(onnx_artifact("squad", local=True), "Where does John Smith live?", context)
    assert result["answer"], result
    assert 0 <= result["start"] < result["end"] <= len(context)
    assert context[result["start"]:result["end"]] == result["answer"]
    assert isinstance(result["score"], float)


def test_token_classification_tags_every_word_piece(onnx_artifact):
    text = "John Smith works at Google in Berlin."
    result = predict(onnx_artifact("ner", local=True), text)
    tokens = result["tokens"]
    assert [t["token"] for t in tokens] == ["John", "Smith", "works", "at", "Google", "in", "Berlin", "."]
    for t in tokens:
        assert text[t["start"]:t["end"]] == t["token"]
        assert t["label"] in CONLL_LABELS


def test_token_classification_refuses_a_second_text(onnx_artifact):
    """Its offsets would index the wrong text."""
    with pytest.raises(SbexportError, match="tags the words of one text"):
        predict(onnx_artifact("ner", local=True), "John works.", "He lives in Paris.")


@pytest.mark.parametrize("endings", ["the dog slept.|the cat sat.",
                                     "a|b|c|d|e"])
def test_multiple_choice_takes_any_number_of_endings_in_onnx(onnx_artifact, endings):
    """The ONNX file's choices are dynamic (1..64); predict demanded exactly 64."""
    result = predict(onnx_artifact("swag", local=True), "The man sat by the fire", endings)
    n = len(endings.split("|"))
    assert [c["choice"] for c in result["choices"]] == list(range(n))
    _assert_distribution([c["score"] for c in result["choices"]])
    assert result["best"] == max(range(n), key=lambda i: result["choices"][i]["score"])


def test_multiple_choice_executorch_takes_exactly_its_fixed_count(et_artifact):
    folder = et_artifact("swag")
    result = predict(folder, "The man sat by the fire", "he slept.|he runs.|the dog slept.|a cat sat.")
    assert len(result["choices"]) == 4
    with pytest.raises(SbexportError, match="takes exactly 4 endings"):
        predict(folder, "The man sat by the fire", "he slept.|he runs.")


def test_fill_mask_gives_top_k_per_mask(onnx_artifact):
    result = predict(onnx_artifact("fill-mask", local=True), "The [MASK] sat on the [MASK].", top_k=3)
    assert len(result["masks"]) == 2
    for candidates in result["masks"]:
        assert len(candidates) == 3
        scores = [c["score"] for c in candidates]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        assert all(isinstance(c["token"], str) and c["token"] for c in candidates)
    with pytest.raises(SbexportError, match=r"needs a \[MASK\] token"):
        predict(onnx_artifact("fill-mask", local=True), "The cat sat on the mat.")


def test_features_give_the_embedding(onnx_artifact):
    result = predict(onnx_artifact("features", local=True), "The cat sat on the mat.")
    assert result["last_hidden_state_shape"] == [1, 9, EXPORT_TINY["hidden_size"]]
    assert len(result["pooler_output"]) == 9 and result["pooler_output"][-1] == "..."
    assert all(-1 <= v <= 1 for v in result["pooler_output"][:8])   # tanh


@pytest.mark.parametrize("task_name, pair", [("mnli", "Someone makes music."), ("features", None),
                                             ("squad", "The cat sat on the mat.")])
def test_text_longer_than_the_model_is_truncated_with_a_warning(onnx_artifact, task_name, pair):
    long_text = " ".join(["the cat sat on the mat"] * 30)     # 180 words > 64 positions
    with pytest.warns(UserWarning, match=f"truncated to the model's maximum of {MAX_SEQ}"):
        result = predict(onnx_artifact(task_name, local=True), long_text if task_name != "squad" else "Who sat?",
                         pair if task_name != "squad" else long_text)
    assert result["task"] == task_name


@pytest.mark.parametrize("text, pair", [("", None), ("   \n", None), ("A man.", "  ")])
def test_empty_text_is_refused(onnx_artifact, text, pair):
    with pytest.raises(SbexportError, match="empty text"):
        predict(onnx_artifact("mnli", local=True), text, pair)


def test_question_answering_needs_a_context(onnx_artifact):
    with pytest.raises(SbexportError, match="needs a second text"):
        predict(onnx_artifact("squad", local=True), "Where?")


def test_artifact_without_tokenizer_is_refused(onnx_artifact):
    with pytest.raises(SbexportError, match="has no tokenizer"):
        predict(onnx_artifact("sst2"), "A fine film.")


@pytest.fixture(scope="module")
def batch2_pte(tmp_path_factory, tiny_checkpoint):
    """mnli as a portable ExecuTorch program with a fixed batch of 2."""
    from sbexport.export import ExportOptions, export_artifact
    from sbexport.source import resolve_source

    task = TASKS["mnli"]
    return export_artifact("executorch", task, resolve_source(task, model=str(tiny_checkpoint("mnli"))),
                           tmp_path_factory.mktemp("b2") / "mnli-b2", ExportOptions(backend="portable", batch=2),
                           log=lambda _: None)


def test_fixed_batch_program_predicts_one_text(batch2_pte, onnx_artifact):
    """predict fed a batch of 1 to a --batch 2 program, which refused it."""
    got = predict(batch2_pte, "A man plays the guitar.", "Someone makes music.")
    same_weights = predict(onnx_artifact("mnli", local=True), "A man plays the guitar.", "Someone makes music.")
    assert [r["label"] for r in got["labels"]] == [r["label"] for r in same_weights["labels"]]
    np.testing.assert_allclose([r["score"] for r in got["labels"]],
                               [r["score"] for r in same_weights["labels"]], atol=1e-5)
