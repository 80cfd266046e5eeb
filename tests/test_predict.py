"""predict: one smoke test per head on the tiny local-checkpoint artifacts (their weights are
random, so only the structure of each answer is checked), and the inputs it must refuse."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import EXPORT_TINY

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
    decoded = TASKS["stsb"].head.decode(logits, None, ("", ""), labels=["score"], tokenizer=None, top_k=5)
    assert decoded == {"score": 0.25}


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
    # A [MASK] cut off by truncation was reported as missing.
    with pytest.raises(SbexportError, match=r"the \[MASK\] token is at token \d+ of \d+, beyond the file's maximum"):
        predict(onnx_artifact("fill-mask", local=True), "the cat sat " * 40 + "[MASK]")


def test_features_give_the_embedding(onnx_artifact):
    result = predict(onnx_artifact("features", local=True), "The cat sat on the mat.")
    assert result["last_hidden_state_shape"] == [1, 9, EXPORT_TINY["hidden_size"]]
    assert len(result["pooler_output"]) == 9 and result["pooler_output"][-1] == "..."
    assert all(-1 <= v <= 1 for v in result["pooler_output"][:8])   # tanh


@pytest.mark.parametrize("task_name, pair", [("mnli", "Someone makes music."), ("features", None)])
def test_text_longer_than_the_model_is_truncated_with_a_warning(onnx_artifact, task_name, pair):
    """(A question's long context is read in windows instead: test_a_long_context_is_answered_from_any_window.)"""
    long_text = " ".join(["the cat sat on the mat"] * 30)     # 180 words > 64 positions
    with pytest.warns(UserWarning, match=f"truncated to the model's maximum of {MAX_SEQ}"):
        result = predict(onnx_artifact(task_name, local=True), long_text, pair)
    assert result["task"] == task_name


@pytest.mark.parametrize("text, pair", [("", None), ("   \n", None), ("A man.", "  ")])
def test_empty_text_is_refused(onnx_artifact, text, pair):
    with pytest.raises(SbexportError, match="empty text"):
        predict(onnx_artifact("mnli", local=True), text, pair)


@pytest.mark.parametrize("text, pair, name", [("\u200b", "A man.", "TEXT"),
                                              ("A man.", "\u200c\x01\u200d", "TEXT_PAIR")])
def test_a_text_the_tokenizer_drops_whole_is_refused(onnx_artifact, text, pair, name):
    """Zero-width and control characters pass the blank check but tokenize to nothing."""
    with pytest.raises(SbexportError, match=f"{name} has no tokens"):
        predict(onnx_artifact("mnli", local=True), text, pair)


def test_an_ending_the_tokenizer_drops_whole_is_refused(onnx_artifact):
    with pytest.raises(SbexportError, match="TEXT_PAIR has no tokens"):
        predict(onnx_artifact("swag", local=True), "A man sat.", "He slept.|\u200b|He ran.|He sat.")


def test_question_answering_needs_a_context(onnx_artifact):
    with pytest.raises(SbexportError, match="needs a second text"):
        predict(onnx_artifact("squad", local=True), "Where?")


def test_artifact_without_tokenizer_is_refused(onnx_artifact):
    with pytest.raises(SbexportError, match="has no tokenizer"):
        predict(onnx_artifact("sst2"), "A fine film.")


@pytest.fixture(scope="module")
def batch2_pte(tmp_path_factory, tiny_checkpoint):
    """mnli as a portable ExecuTorch program with a fixed batch of 2."""
    from sbexport.export import ExecuTorchOptions, export_artifact
    from sbexport.source import resolve_source

    task = TASKS["mnli"]
    return export_artifact("executorch", task, resolve_source(task, model=str(tiny_checkpoint("mnli"))),
                           tmp_path_factory.mktemp("b2") / "mnli-b2", ExecuTorchOptions(backend="portable", batch=2),
                           log=lambda _: None)


def test_fixed_batch_program_predicts_one_text(batch2_pte, onnx_artifact):
    """predict fed a batch of 1 to a --batch 2 program, which refused it."""
    got = predict(batch2_pte, "A man plays the guitar.", "Someone makes music.")
    same_weights = predict(onnx_artifact("mnli", local=True), "A man plays the guitar.", "Someone makes music.")
    assert [r["label"] for r in got["labels"]] == [r["label"] for r in same_weights["labels"]]
    np.testing.assert_allclose([r["score"] for r in got["labels"]],
                               [r["score"] for r in same_weights["labels"]], atol=1e-5)


# -- predict gives the reference model's own answer, for every head ---------------------------
#
# The expected answer is computed here, independently of predict's decoders: transformers'
# BertTokenizerFast reads the checkpoint's tokenizer, the PyTorch model of the checkpoint runs
# it, and the decoding rule is written out in each test. The tiny checkpoints' weights are
# perturbed, so each answer depends on the weights; each test also checks that its answer is
# not degenerate (a reversed label list or a swapped start/end would change it).
#
# Tolerance of scores: the exported file's logits are within the task's atol (1e-4, the
# parity bound verify enforces) of PyTorch's; softmax is 1-Lipschitz, so a probability moves
# by at most as much. Measured on the Intel kind: probabilities within 6e-8 of PyTorch's (ONNX
# Runtime and XNNPACK), the regression score 6e-8, the pooled values 4e-7 (predict rounds them
# to 6 decimals); atol leaves a margin of over 200x for the AMD kind, whose parity holds the same
# bound. A decision (argmax) is only compared where the reference's margin exceeds 2 atol.

ATOL = TASKS["mnli"].atol


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    """reference(task) -> (PyTorch model, transformers tokenizer) of the tiny checkpoint."""
    from transformers import BertTokenizerFast

    from sbexport.source import build_reference, resolve_source

    def get(task_name):
        folder = tiny_checkpoint(task_name)
        task = TASKS[task_name]
        model = build_reference(task, resolve_source(task, model=str(folder))).eval()
        return model, BertTokenizerFast.from_pretrained(str(folder))
    return get


def _run(model, enc):
    """The model's output on the encoding's three inputs (numpy arrays)."""
    import torch

    with torch.no_grad():
        return model(**{k: torch.as_tensor(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids")})


def _np_softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _margin(values) -> float:
    top = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    return float(top[0] - top[1])


@pytest.mark.parametrize("fmt", ["onnx", "executorch"])
def test_sequence_classification_is_the_reference_answer(fmt, onnx_artifact, et_artifact, reference):
    model, tok = reference("mnli")
    text, pair = "A man plays the guitar.", "Someone makes music."
    logits = _run(model, tok(text, pair, return_tensors="np")).logits[0].numpy()
    probs = _np_softmax(logits.astype(np.float64))
    names = [model.config.id2label[i] for i in range(len(probs))]
    order = np.argsort(-probs)
    # Not degenerate: the best label is not the middle one (which a reversed list keeps), and
    # the scores differ enough that the order is the weights', not fp32 noise.
    assert order[0] != 1 and min(abs(np.diff(np.sort(probs)))) > 2 * ATOL, probs
    folder = onnx_artifact("mnli", local=True) if fmt == "onnx" else et_artifact("mnli")
    result = predict(folder, text, pair)
    assert [r["label"] for r in result["labels"]] == [names[i] for i in order]
    np.testing.assert_allclose([r["score"] for r in result["labels"]], probs[order], atol=ATOL)


def test_regression_score_is_the_reference_value(onnx_artifact, reference):
    model, tok = reference("stsb")
    text, pair = "A man plays the guitar.", "Someone makes music."
    expected = float(_run(model, tok(text, pair, return_tensors="np")).logits[0, 0])
    assert abs(expected) > 10 * ATOL
    assert predict(onnx_artifact("stsb", local=True), text, pair)["score"] == pytest.approx(expected, abs=ATOL)


def test_question_answering_span_is_the_reference_answer(onnx_artifact, reference):
    """Best span: start <= end, under 30 tokens, both ends on context word pieces (token type 1,
    not [SEP]); the answer is the context's characters from the start piece to the end piece."""
    model, tok = reference("squad")
    question = "What is the capital of France?"
    context = "John Smith works at Google in New York. He lives in Paris, France."
    enc = tok(question, context, return_tensors="np", return_offsets_mapping=True)
    out = _run(model, enc)
    start, end = out.start_logits[0].numpy(), out.end_logits[0].numpy()
    offsets = enc["offset_mapping"][0]
    context_pieces = [i for i in range(len(offsets))
                      if enc["token_type_ids"][0][i] == 1 and offsets[i][1] > offsets[i][0]]

    def best(s, e):
        i, j = max(((i, j) for i in context_pieces for j in context_pieces if i <= j < i + 30),
                   key=lambda ij: s[ij[0]] + e[ij[1]])
        return context[offsets[i][0]:offsets[j][1]], float(s[i] + e[j])
    answer, score = best(start, end)
    # Not degenerate: several word pieces (measured: "York. He lives in Paris, France", its score
    # 0.09 above the next span), and start and end swapped would answer otherwise.
    assert best(end, start)[0] != answer
    assert len(answer.split()) > 2 and len(answer) < len(context)
    result = predict(onnx_artifact("squad", local=True), question, context)
    assert result["answer"] == answer
    assert context[result["start"]:result["end"]] == answer
    assert result["score"] == pytest.approx(score, abs=2 * ATOL)


def test_token_classification_tags_are_the_reference_tags(onnx_artifact, reference):
    model, tok = reference("ner")
    text = "John Smith works at Google in Berlin."
    enc = tok(text, return_tensors="np", return_offsets_mapping=True)
    logits = _run(model, enc).logits[0].numpy()
    names = [model.config.id2label[i] for i in range(logits.shape[-1])]
    pieces = [(i, s, e) for i, (s, e) in enumerate(enc["offset_mapping"][0]) if e > s]
    expected = [(text[s:e], names[int(logits[i].argmax())]) for i, s, e in pieces]
    ids = {int(logits[i].argmax()) for i, _, _ in pieces}
    assert len(ids) > 1 and ids != {len(names) // 2}, expected     # a reversed label list changes it
    assert all(_margin(logits[i]) > 2 * ATOL for i, _, _ in pieces)
    result = predict(onnx_artifact("ner", local=True), text)
    assert [(t["token"], t["label"]) for t in result["tokens"]] == expected


@pytest.mark.parametrize("fmt", ["onnx", "executorch"])
def test_multiple_choice_best_is_the_reference_choice(fmt, onnx_artifact, et_artifact, reference):
    model, tok = reference("swag")
    context, endings = "The man sat by the fire", ["he slept.", "he runs.", "the dog slept.", "a cat sat."]
    enc = tok([context] * 4, endings, padding="longest", return_tensors="np")
    logits = _run(model, {k: v[None] for k, v in enc.items()}).logits[0].numpy().astype(np.float64)
    probs = _np_softmax(logits)
    assert probs.argmax() != len(probs) - 1 - probs.argmax() and _margin(probs) > 2 * ATOL, probs
    folder = onnx_artifact("swag", local=True) if fmt == "onnx" else et_artifact("swag")
    result = predict(folder, context, "|".join(endings))
    assert result["best"] == int(probs.argmax())
    np.testing.assert_allclose([c["score"] for c in result["choices"]], probs, atol=ATOL)


def test_fill_mask_candidates_are_the_reference_top_k(onnx_artifact, reference):
    model, tok = reference("fill-mask")
    text = "The [MASK] sat on the [MASK]."
    enc = tok(text, return_tensors="np")
    logits = _run(model, enc).logits[0].numpy()[:, :tok.vocab_size].astype(np.float64)
    expected = []
    for pos in np.flatnonzero(enc["input_ids"][0] == tok.mask_token_id):
        probs = _np_softmax(logits[pos])
        best = np.argsort(-probs)[:3]
        assert _margin(probs[best[:-1]]) > 2 * ATOL or len(best) < 2
        expected.append([(tok.convert_ids_to_tokens(int(t)), float(probs[t])) for t in best])
    assert len(expected) == 2 and expected[0][0][0] != expected[0][1][0]
    result = predict(onnx_artifact("fill-mask", local=True), text, top_k=3)
    assert [[c["token"] for c in m] for m in result["masks"]] == [[t for t, _ in m] for m in expected]
    np.testing.assert_allclose([[c["score"] for c in m] for m in result["masks"]],
                               [[p for _, p in m] for m in expected], atol=ATOL)


def test_features_are_the_reference_pooled_output(onnx_artifact, reference):
    model, tok = reference("features")
    text = "The cat sat on the mat."
    out = _run(model, tok(text, return_tensors="np"))
    pooled = out.pooler_output[0].numpy()
    assert np.ptp(pooled[:8]) > 0.1          # not a constant vector
    result = predict(onnx_artifact("features", local=True), text)
    assert result["last_hidden_state_shape"] == list(out.last_hidden_state.shape)
    np.testing.assert_allclose(result["pooler_output"][:8], pooled[:8], atol=ATOL)


# -- question answering over a context longer than the file: windows, not truncation ------------

def pointing_runner(tokenizer, first: str, last: str):
    """A stand-in model whose best span runs from the word piece `first` to `last`: start
    logit 10 at `first`'s id, end logit 10 at `last`'s, 0 elsewhere. Its run records the batch
    of every call."""
    ids = tokenizer.convert_tokens_to_ids([first, last])

    class Pointing:
        calls = []

        def run(self, feeds):
            self.calls.append(len(feeds["input_ids"]))
            return [np.where(feeds["input_ids"] == i, 10.0, 0.0).astype(np.float32) for i in ids]
    return Pointing()


@pytest.mark.parametrize("max_seq, words", [(64, 200), (384, 1500), (32, 20), (20, 300)])
def test_context_windows_are_transformers_overflowing_rows(minilm_dir, max_seq, words):
    """The rows of a long context, ids and character offsets, are those of transformers'
    tokenizer with truncation="only_second", return_overflowing_tokens and stride =
    min(DOC_STRIDE, half the context's room): the windows run_qa and its pipeline read."""
    from transformers import BertTokenizerFast

    from sbexport.heads import DOC_STRIDE
    from sbexport.tokenizer import SqueezeBertTokenizer

    ours = SqueezeBertTokenizer(minilm_dir / "vocab.txt")
    theirs = BertTokenizerFast(vocab=str(minilm_dir / "vocab.txt"), model_max_length=512)
    rng = np.random.default_rng(words)
    vocab = "the cat sat on a mat while John Smith lived in Paris, France; unbelievably photosynthesis".split()
    question, context = "Where did John Smith live?", " ".join(rng.choice(vocab, words))
    encoded = TASKS["squad"].head.encode(ours, [(question, context)], max_seq, windows=True)
    room = max_seq - len(ours(question)["input_ids"]) - 1
    expected = theirs(question, context, truncation="only_second", max_length=max_seq, return_offsets_mapping=True,
                      stride=min(DOC_STRIDE, room // 2), return_overflowing_tokens=True)
    real = encoded.arrays["attention_mask"].astype(bool)
    assert [row[m].tolist() for row, m in zip(encoded.arrays["input_ids"], real)] == expected["input_ids"]
    assert [row[m].tolist() for row, m in zip(encoded.arrays["offset_mapping"], real)] == \
        [[list(o) for o in row] for row in expected["offset_mapping"]]
    assert len(expected["input_ids"]) > 1 and encoded.rows == [slice(0, len(expected["input_ids"]))]
    assert encoded.lengths == [max_seq]


def test_a_long_context_is_answered_from_any_window(onnx_artifact, monkeypatch):
    """The answer sits at the end of a context 4x longer than the file: predict reads every
    window (no truncation warning) and picks the best span over them, in the context's
    characters. Truncated, the context would lose it."""
    import warnings

    import sbexport.predict as predict_module
    from sbexport.tokenizer import SqueezeBertTokenizer

    folder = onnx_artifact("squad", local=True)
    pointing = pointing_runner(SqueezeBertTokenizer.from_pretrained(folder), "dog", "mat")
    monkeypatch.setattr(predict_module, "open_runner", lambda path, names: pointing)
    context = "the cat sat on the mat . " * 40 + "John saw a dog on the mat ."
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = predict(folder, "Who sat?", context)
    assert result["answer"] == "dog on the mat" == context[result["start"]:result["end"]]
    assert result["start"] > len(context) - 20 and result["score"] == 20.0
    assert len(pointing.calls) == 1 and pointing.calls[0] > 4       # every window in one call


@pytest.mark.parametrize("fixed, sizes", [(True, [3, 3, 3]), (False, [3, 3, 1])])
def test_rows_run_in_calls_the_file_takes(fixed, sizes):
    """run_rows: 7 rows through a batch of 3. A fixed-batch file gets exactly 3 a call, the last
    filled with copies of row 6 whose outputs are dropped; the outputs are the 7 rows in order."""
    from sbexport.runtime import run_rows

    calls = []

    def run(feeds):
        calls.append(feeds["x"][:, 0].tolist())
        return [feeds["x"] * 2]
    x = np.arange(7)[:, None]
    (out,) = run_rows(run, {"x": x}, 3, fixed=fixed)
    assert out.tolist() == (x * 2).tolist()
    assert [len(c) for c in calls] == sizes and calls[-1][0] == 6 and set(calls[-1]) == {6}
