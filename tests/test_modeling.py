"""The reference SqueezeBERT (sbexport.modeling) equals transformers' SqueezeBERT.

Both models get the same random weights through one state_dict and must give the same outputs
on padded batches; the two behaviours we deliberately do differently (head_mask works,
attentions are returned after softmax) are checked against softmax of transformers' scores and
a hand computation. Also
guarded here: the tuple outputs, the optional inputs, dropout wiring, the tied decoder, and
that the model exports with torch.export under a dynamic batch and sequence.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import pytest
import torch
import transformers
from conftest import tiny_squeezebert_config
from torch import nn

from sbexport import modeling as sb

# Peer parity bound, absolute, float32. Both implementations run the same fp32 ops (conv1d,
# matmul, softmax, layer_norm, embedding) in the same order on the same weights, so they differ
# only by rounding, where an op is spelled differently: the attention context is v @ P^T here
# and P @ v^T there (the same products, summed by a differently blocked kernel), gelu_new is a
# tanh formula there and GELU(approximate="tanh") here, and loss reductions. That is a few ulps
# (1.2e-7 relative) of values of size O(1-10): ~1e-6, measured at most 2e-6 over 3 layers.
# 1e-5 leaves room for that and still catches real defects: a wrong group, mask or bias moves
# outputs by 1e-2 or more, gelu in place of gelu_new by 1.3e-3, and even the encoder's
# LayerNorm eps at 1e-5 instead of 1e-12 by 1.2e-5 to 2.4e-5.
ATOL = 1e-5

NUM_CHOICES = 3
USED_VOCAB = 99          # ids are drawn below this; vocab_size is larger, as 30528 vs 30522

HEADS = {  # name: (ours, transformers', outputs compared besides hidden states and attentions)
    "model": (sb.SqueezeBertModel, transformers.SqueezeBertModel,
              ("last_hidden_state", "pooler_output")),
    "masked_lm": (sb.SqueezeBertForMaskedLM, transformers.SqueezeBertForMaskedLM,
                  ("loss", "logits")),
    "sequence_classification": (sb.SqueezeBertForSequenceClassification,
                                transformers.SqueezeBertForSequenceClassification, ("loss", "logits")),
    "multiple_choice": (sb.SqueezeBertForMultipleChoice, transformers.SqueezeBertForMultipleChoice,
                        ("loss", "logits")),
    "token_classification": (sb.SqueezeBertForTokenClassification,
                             transformers.SqueezeBertForTokenClassification, ("loss", "logits")),
    # transformers takes the QA output width from num_labels: it must be 2.
    "question_answering": (sb.SqueezeBertForQuestionAnswering,
                           transformers.SqueezeBertForQuestionAnswering,
                           ("loss", "start_logits", "end_logits")),
}
NUM_LABELS = {"sequence_classification": 3, "token_classification": 5, "question_answering": 2}


def _groups(q, k, v, post, inter, out):
    return dict(q_groups=q, k_groups=k, v_groups=v, post_attention_groups=post,
                intermediate_groups=inter, output_groups=out)


# Group counts 1, 2, 4, 8 (uniform and mixed), every activation, 1-3 layers, hidden 16-64.
# layer_norm_eps stays at its default: transformers hard-codes 1e-12 in the encoder's layer
# norms and ignores the config there (the public checkpoints use 1e-12, so nothing real differs).
CONFIGS = {
    "g1-gelu": dict(hidden_size=16, num_attention_heads=2, intermediate_size=32,
                    num_hidden_layers=1, hidden_act="gelu", **_groups(1, 1, 1, 1, 1, 1)),
    "g2-relu": dict(hidden_size=32, num_attention_heads=4, intermediate_size=64,
                    num_hidden_layers=2, hidden_act="relu", **_groups(2, 2, 2, 2, 2, 2)),
    "g4-silu": dict(hidden_size=32, num_attention_heads=4, intermediate_size=64,
                    num_hidden_layers=2, hidden_act="silu", **_groups(4, 4, 4, 4, 4, 4)),
    "g8-gelu_new": dict(hidden_size=64, num_attention_heads=8, intermediate_size=128,
                        num_hidden_layers=3, hidden_act="gelu_new", **_groups(8, 8, 8, 8, 8, 8)),
    "mixed-gelu_new": dict(hidden_size=32, num_attention_heads=2, intermediate_size=96,
                           num_hidden_layers=2, hidden_act="gelu_new", **_groups(8, 4, 2, 1, 8, 4)),
    "mixed-silu": dict(hidden_size=48, num_attention_heads=3, intermediate_size=64,
                       num_hidden_layers=2, hidden_act="silu", **_groups(1, 2, 4, 8, 4, 8)),
}


def make_config(name="mixed-gelu_new", head="model", **overrides):
    fields = {**CONFIGS[name], "embedding_size": CONFIGS[name]["hidden_size"], "vocab_size": 131,
              "type_vocab_size": 3, "max_position_embeddings": 40, "hidden_dropout_prob": 0.1,
              "attention_probs_dropout_prob": 0.1, "num_labels": NUM_LABELS.get(head, 2), **overrides}
    return tiny_squeezebert_config(**fields)


def hf_config(config) -> transformers.SqueezeBertConfig:
    skip = {"extra", "id2label", "label2id"}
    return transformers.SqueezeBertConfig(**{f.name: getattr(config, f.name)
                                             for f in dataclasses.fields(config) if f.name not in skip})


def randomise(model: nn.Module, gen: torch.Generator) -> None:
    """Every parameter random, LayerNorm scales and all biases included.

    Every matrix gets unit gain (std 1/sqrt(fan_in)), the embeddings too: a LayerNorm follows
    them, so their scale does not matter to the encoder, but the word embeddings are also the
    masked LM's decoder, and unit gain keeps its logits O(1-10) like every other output. (With
    std 1 they reach |28|, where one ulp is 1.9e-6.)
    """
    with torch.no_grad():
        for name, p in model.named_parameters():   # tied parameters come once
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() == 1 and name.lower().endswith("layernorm.weight"):
                p.copy_(1 + 0.3 * noise)
            elif p.dim() == 1:                    # biases, LayerNorm shifts
                p.copy_(0.3 * noise)
            else:   # Linear [out, in], Conv1d [out, in/groups, 1], Embedding [rows, width]
                p.copy_(noise / math.sqrt(p[0].numel()))


def build_pair(head, config, seed=0):
    """Our model with random weights, and transformers' model loaded from its state_dict."""
    ours_cls, theirs_cls, _ = HEADS[head]
    ours = ours_cls(config)
    randomise(ours, torch.Generator().manual_seed(seed))
    theirs = theirs_cls(hf_config(config))
    state = ours.state_dict()
    result = theirs.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # ... and back: transformers' state_dict loads strictly into ours, with the same tensors.
    back = ours_cls(config)
    result = back.load_state_dict(theirs.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert list(state) == list(theirs.state_dict())
    for key, value in back.state_dict().items():
        assert torch.equal(value, state[key]), key
    return ours.eval(), theirs.eval()


def make_inputs(config, head, gen, batch=3, seq=9):
    """Right-padded ids (a different length per row), attention mask and token types."""
    rows = batch * NUM_CHOICES if head == "multiple_choice" else batch
    lengths = seq - (torch.arange(rows) * 5) % (seq - 1)          # 9, 4, 7, 2, 5, 8, ...
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()     # [rows, S]
    ids = torch.randint(1, USED_VOCAB, (rows, seq), generator=gen) * mask
    types = torch.randint(0, config.type_vocab_size, (rows, seq), generator=gen) * mask
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
    if head == "multiple_choice":                                  # [B, C, S], contiguous
        inputs = {k: v.view(batch, NUM_CHOICES, seq).contiguous() for k, v in inputs.items()}
    return inputs


def make_labels(config, head, inputs, gen):
    mask = inputs["attention_mask"]
    batch, seq = mask.shape[0], mask.shape[-1]
    if head == "masked_lm":   # a few positions predicted (ids of any row, extra ones too), -100 elsewhere
        chosen = (torch.rand(mask.shape, generator=gen) < 0.4) & mask.bool()
        chosen[0, 1] = True
        return dict(labels=torch.randint(0, config.vocab_size, mask.shape, generator=gen)
                    .masked_fill(~chosen, -100))
    if head == "sequence_classification":
        return dict(labels=torch.randint(0, config.num_labels, (batch,), generator=gen))
    if head == "multiple_choice":
        return dict(labels=torch.randint(0, NUM_CHOICES, (batch,), generator=gen))
    if head == "token_classification":
        return dict(labels=torch.randint(0, config.num_labels, mask.shape, generator=gen)
                    .masked_fill(~mask.bool(), -100))
    if head == "question_answering":   # in range, past the end (ignored), negative (clamped to 0)
        return dict(start_positions=torch.tensor([1, seq + 4, -2])[:batch],
                    end_positions=torch.tensor([3, seq, 5])[:batch])
    return {}


# -- comparison ------------------------------------------------------------------------

MAX_DIFF: dict[str, float] = defaultdict(float)   # worst |ours - transformers| per output, for the report


def assert_close(ours, theirs, what, atol=ATOL):
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} vs {theirs.dtype}"
    diff = (ours - theirs).abs().max().item() if ours.numel() else 0.0
    MAX_DIFF[what.split("[")[0]] = max(MAX_DIFF[what.split("[")[0]], diff)
    assert diff <= atol, f"{what}: max |diff| {diff:.3g} > {atol}"


def assert_matches_transformers(ours, theirs, names, num_layers):
    """Named outputs, every hidden state, and attentions against softmax of transformers'
    scores (transformers returns them before softmax, a defect we do not copy)."""
    for name in names:
        assert_close(getattr(ours, name), getattr(theirs, name), name)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == num_layers + 1
    for i, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
        assert_close(a, b, f"hidden_states[{i}]")
    assert len(ours.attentions) == len(theirs.attentions) == num_layers
    for i, (a, b) in enumerate(zip(ours.attentions, theirs.attentions)):
        assert_close(a, b.softmax(dim=-1), f"attentions[{i}]")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine waiting OpenMP
    threads turn a 15 ms forward into a second. Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def report_max_diffs():
    """Prints the worst differences measured (visible with pytest -s)."""
    yield
    print("\nmax |difference| measured per output (float32 unless named):")
    for what, diff in sorted(MAX_DIFF.items()):
        print(f"  {what:<20} {diff:.3g}")


def outputs_without_loss(head):
    return tuple(n for n in HEADS[head][2] if n != "loss")


def run_both(ours, theirs, **kwargs):
    with torch.no_grad():
        return ours(**kwargs), theirs(**kwargs)


# -- peer parity -------------------------------------------------------------------------


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("head", HEADS)
def test_parity_with_transformers(head, config_name):
    config = make_config(config_name, head)
    ours, theirs = build_pair(head, config, seed=len(config_name))
    gen = torch.Generator().manual_seed(1)
    inputs = make_inputs(config, head, gen)
    labels = make_labels(config, head, inputs, gen)
    a, b = run_both(ours, theirs, **inputs, **labels, output_hidden_states=True,
                    output_attentions=True)
    assert_matches_transformers(a, b, HEADS[head][2], config.num_hidden_layers)
    if "loss" in HEADS[head][2]:
        assert torch.isfinite(a.loss) and a.loss > 0


SEQUENCE_LOSSES = {  # name: (num_labels, explicit problem_type, label maker)
    "regression": (1, None, lambda g: torch.randn(3, generator=g)),
    "single_label": (3, None, lambda g: torch.randint(0, 3, (3,), generator=g)),
    "multi_label": (3, None, lambda g: torch.randint(0, 2, (3, 3), generator=g).float()),
    # Explicit problem types, two of them where the labels alone would choose another loss.
    "explicit_regression": (3, "regression", lambda g: torch.randn(3, 3, generator=g)),
    "explicit_single_label": (4, "single_label_classification",
                              lambda g: torch.randint(0, 4, (3,), generator=g)),
    "explicit_multi_label": (1, "multi_label_classification",
                             lambda g: torch.randint(0, 2, (3, 1), generator=g).float()),
}


@pytest.mark.parametrize("case", SEQUENCE_LOSSES)
def test_sequence_classification_losses(case):
    num_labels, problem_type, make = SEQUENCE_LOSSES[case]
    config = make_config("g2-relu", num_labels=num_labels, problem_type=problem_type)
    ours, theirs = build_pair("sequence_classification", config, seed=3)
    gen = torch.Generator().manual_seed(4)
    inputs = make_inputs(config, "sequence_classification", gen)
    a, b = run_both(ours, theirs, **inputs, labels=make(gen))
    assert_close(a.logits, b.logits, "logits")
    assert_close(a.loss, b.loss, "loss")


def test_question_answering_loss_ignores_positions_past_the_end():
    config = make_config("g2-relu", "question_answering")
    model = sb.SqueezeBertForQuestionAnswering(config).eval()
    randomise(model, torch.Generator().manual_seed(5))
    inputs = make_inputs(config, "question_answering", torch.Generator().manual_seed(6), seq=9)
    labels = make_labels(config, "question_answering", inputs, None)   # starts 1, 13, -2
    with torch.no_grad():
        out = model(**inputs, **labels)
    # Row 1's start (13) is ignored, row 2's (-2) clamped to 0; every end (3, 9 -> ignored, 5)
    start = -out.start_logits.log_softmax(-1)
    end = -out.end_logits.log_softmax(-1)
    expected = ((start[0, 1] + start[2, 0]) / 2 + (end[0, 3] + end[2, 5]) / 2) / 2
    assert_close(out.loss, expected, "qa loss by hand")


# -- tuples and optional inputs ---------------------------------------------------------


def _assert_tuples_match(ours: tuple, theirs: tuple, attentions_last: bool):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        last = attentions_last and i == len(ours) - 1
        if isinstance(a, tuple):
            assert isinstance(b, tuple) and len(a) == len(b)
            for j, (x, y) in enumerate(zip(a, b)):
                assert_close(x, y.softmax(-1) if last else y, f"tuple[{i}][{j}]")
        else:
            assert isinstance(a, torch.Tensor) and not last
            assert_close(a, b, f"tuple[{i}]")


@pytest.mark.parametrize("full", [True, False], ids=["labels+states+attentions", "bare"])
@pytest.mark.parametrize("head", HEADS)
def test_return_dict_false_matches_transformers_tuple(head, full):
    config = make_config("g4-silu", head)
    ours, theirs = build_pair(head, config, seed=7)
    gen = torch.Generator().manual_seed(8)
    inputs = make_inputs(config, head, gen)
    extra = dict(**make_labels(config, head, inputs, gen), output_hidden_states=True,
                 output_attentions=True) if full else {}
    a, b = run_both(ours, theirs, **inputs, **extra, return_dict=False)
    assert isinstance(a, tuple) and isinstance(b, tuple)
    _assert_tuples_match(a, b, attentions_last=full)
    with torch.no_grad():   # the tuple is the dict's non-None fields in order
        as_dict = ours(**inputs, **extra).to_tuple()
    _assert_tuples_match(a, as_dict, attentions_last=False)


@pytest.mark.parametrize("head", HEADS)
def test_inputs_embeds(head):
    config = make_config("mixed-silu", head)
    ours, theirs = build_pair(head, config, seed=9)
    gen = torch.Generator().manual_seed(10)
    inputs = make_inputs(config, head, gen)
    ids = inputs.pop("input_ids")
    embeds = torch.randn(*ids.shape, config.hidden_size, generator=gen).contiguous()
    a, b = run_both(ours, theirs, **inputs, inputs_embeds=embeds, output_hidden_states=True,
                    output_attentions=True)
    assert_matches_transformers(a, b, outputs_without_loss(head), config.num_hidden_layers)
    # The word embeddings of the ids as inputs_embeds equal the ids themselves.
    with torch.no_grad():
        from_ids = ours(**inputs, input_ids=ids)
        from_embeds = ours(**inputs, inputs_embeds=ours.get_submodule(
            "embeddings.word_embeddings" if head == "model" else
            "transformer.embeddings.word_embeddings")(ids))
    for x, y in zip(from_ids.to_tuple(), from_embeds.to_tuple()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("head", ["model", "multiple_choice", "question_answering"])
def test_explicit_position_ids(head):
    config = make_config("g8-gelu_new", head)
    ours, theirs = build_pair(head, config, seed=11)
    gen = torch.Generator().manual_seed(12)
    inputs = make_inputs(config, head, gen)
    shape = inputs["input_ids"].shape
    positions = torch.randint(0, config.max_position_embeddings, shape, generator=gen).contiguous()
    a, b = run_both(ours, theirs, **inputs, position_ids=positions, output_hidden_states=True,
                    output_attentions=True)
    names = outputs_without_loss(head)
    assert_matches_transformers(a, b, names, config.num_hidden_layers)
    with torch.no_grad():
        default = ours(**inputs)
        arange = ours(**inputs, position_ids=torch.arange(shape[-1]).expand(shape).contiguous())
    for name in names:   # positions 0..S-1 are the default
        assert torch.equal(getattr(default, name), getattr(arange, name))
    assert not torch.allclose(getattr(a, names[0]), getattr(default, names[0]))


@pytest.mark.parametrize("head", HEADS)
def test_defaults_without_mask_and_token_types(head):
    config = make_config("g2-relu", head)
    ours, theirs = build_pair(head, config, seed=13)
    shape = make_inputs(config, head, torch.Generator())["input_ids"].shape   # no padding here
    ids = torch.randint(1, USED_VOCAB, shape, generator=torch.Generator().manual_seed(14))
    a, b = run_both(ours, theirs, input_ids=ids, output_hidden_states=True, output_attentions=True)
    names = outputs_without_loss(head)
    assert_matches_transformers(a, b, names, config.num_hidden_layers)
    with torch.no_grad():   # no mask = all ones, no token types = all zeros
        explicit = ours(input_ids=ids, attention_mask=torch.ones_like(ids),
                        token_type_ids=torch.zeros_like(ids))
    for name in names:
        assert torch.equal(getattr(a, name), getattr(explicit, name))


# -- head_mask (transformers raises on it; we support it) --------------------------------


def _model_and_inputs(config_name="g4-silu", seed=15, **overrides):
    config = make_config(config_name, **overrides)
    model = sb.SqueezeBertModel(config).eval()
    randomise(model, torch.Generator().manual_seed(seed))
    return model, make_inputs(config, "model", torch.Generator().manual_seed(seed + 1))


def _run(model, **kwargs):
    with torch.no_grad():
        return model(**kwargs, output_hidden_states=True, output_attentions=True)


def test_head_mask_of_ones_is_no_mask_and_shapes_agree():
    model, inputs = _model_and_inputs()
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    plain = _run(model, **inputs)
    ones = _run(model, **inputs, head_mask=torch.ones(layers, heads))
    for x, y in zip(plain.to_tuple(), ones.to_tuple()):
        for a, b in zip(x if isinstance(x, tuple) else (x,), y if isinstance(y, tuple) else (y,)):
            assert torch.equal(a, b)
    per_head = torch.tensor([1.0, 0.0, 0.5, 1.0])                  # (heads,): every layer
    one_d = _run(model, **inputs, head_mask=per_head)
    two_d = _run(model, **inputs, head_mask=per_head.expand(layers, heads))
    assert torch.equal(one_d.last_hidden_state, two_d.last_hidden_state)
    for layer in range(layers):
        assert torch.equal(one_d.attentions[layer][:, 1], torch.zeros_like(one_d.attentions[layer][:, 1]))


def _zero_value_channels(model, layer, head, d):
    """Zero one head's output channels of one layer's value conv: that head's values are 0."""
    value = model.get_submodule(f"encoder.layers.{layer}.attention.value")
    with torch.no_grad():
        value.weight[head * d:(head + 1) * d] = 0
        value.bias[head * d:(head + 1) * d] = 0


@pytest.mark.parametrize("layer, head", [(0, 1), (1, 3)])
def test_zeroed_head_equals_zeroed_value_channels(layer, head):
    config = make_config("g4-silu")
    ours, theirs = build_pair("model", config, seed=17)
    inputs = make_inputs(config, "model", torch.Generator().manual_seed(18))
    mask = torch.ones(config.num_hidden_layers, config.num_attention_heads)
    mask[layer, head] = 0
    masked = _run(ours, **inputs, head_mask=mask)
    plain = _run(ours, **inputs)
    # The silenced head's weights are zero in the returned attentions, the others untouched.
    probs = masked.attentions[layer]
    assert torch.equal(probs[:, head], torch.zeros_like(probs[:, head]))
    others = [h for h in range(config.num_attention_heads) if h != head]
    assert_close(probs[:, others], plain.attentions[layer][:, others], "head_mask attentions")
    assert not torch.allclose(masked.last_hidden_state, plain.last_hidden_state, atol=1e-3)
    # Same output as a model whose head produces zero values: ours, and transformers'.
    _zero_value_channels(ours, layer, head, config.head_size)
    _zero_value_channels(theirs, layer, head, config.head_size)
    zeroed, peer = _run(ours, **inputs), _run(theirs, **inputs)
    for name in ("last_hidden_state", "pooler_output"):
        assert_close(getattr(masked, name), getattr(zeroed, name), f"head_mask {name}")
        assert_close(getattr(masked, name), getattr(peer, name), f"head_mask {name}")


ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_new": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "relu": lambda x: x.clamp(min=0),
    "silu": lambda x: x / (1 + torch.exp(-x)),
}


def _grouped_conv(conv: nn.Conv1d, x):
    """A 1x1 grouped convolution written out: [B, Cin, S] -> [B, Cout, S]."""
    g = conv.groups
    cin, cout = x.shape[1] // g, conv.out_channels // g
    parts = [torch.einsum("oi,bis->bos", conv.weight[j * cout:(j + 1) * cout, :, 0],
                          x[:, j * cin:(j + 1) * cin]) for j in range(g)]
    return torch.cat(parts, dim=1) + conv.bias[None, :, None]


def _channel_layer_norm(ln: nn.LayerNorm, x):
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight[None, :, None] + ln.bias[None, :, None]


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_head_mask_against_a_layer_computed_by_hand(act):
    """Layer 0 written out head by head in float64, with fractional head-mask values."""
    model, inputs = _model_and_inputs("mixed-gelu_new", seed=19, hidden_act=act)
    model.double()
    heads, d = model.config.num_attention_heads, model.config.head_size
    head_mask = torch.tensor([[0.5, 0.0], [1.0, 0.25]], dtype=torch.float64)
    out = _run(model, **inputs, head_mask=head_mask)
    layer = model.encoder.layers[0]
    x = out.hidden_states[0].permute(0, 2, 1)                              # [B, H, S]
    q, k, v = (_grouped_conv(c, x) for c in (layer.attention.query, layer.attention.key,
                                              layer.attention.value))
    padding = ~inputs["attention_mask"].bool()[:, None, :]                # [B, 1, S]
    contexts = []
    for h in range(heads):
        qh, kh, vh = (t[:, h * d:(h + 1) * d] for t in (q, k, v))         # [B, d, S]
        scores = torch.einsum("bds,bdt->bst", qh, kh) / math.sqrt(d)
        probs = scores.masked_fill(padding, -math.inf).softmax(-1) * head_mask[0, h]
        torch.testing.assert_close(out.attentions[0][:, h], probs, rtol=0, atol=1e-12)
        contexts.append(torch.einsum("bst,bdt->bds", probs, vh))
    context = torch.cat(contexts, dim=1)
    post = _channel_layer_norm(layer.post_attention.layernorm,
                               _grouped_conv(layer.post_attention.conv1d, context) + x)
    inter = ACTIVATIONS[act](_grouped_conv(layer.intermediate.conv1d, post))
    y = _channel_layer_norm(layer.output.layernorm, _grouped_conv(layer.output.conv1d, inter) + post)
    torch.testing.assert_close(out.hidden_states[1], y.permute(0, 2, 1), rtol=0, atol=1e-10)
    # Layer 1's rows sum to its mask values (1 and 0.25) instead of 1.
    sums = out.attentions[1].sum(-1)                                       # [B, heads, S]
    torch.testing.assert_close(sums, head_mask[1][None, :, None].expand_as(sums), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(5,), (3,), (2, 5), (3, 4), (1, 4), (2, 2, 4), ()])
def test_head_mask_of_wrong_shape_raises(shape):
    model, inputs = _model_and_inputs()        # 2 layers, 4 heads
    with pytest.raises(ValueError, match=r"head_mask must have shape \(4,\) or \(2, 4\), got"):
        model(**inputs, head_mask=torch.ones(shape))


# -- exportability, dropout, tied decoder ------------------------------------------------


def test_torch_export_with_dynamic_batch_and_sequence():
    """Guards "no Python branch on tensor values": one trace serves other shapes."""
    config = make_config("g2-relu", "sequence_classification")
    model = sb.SqueezeBertForSequenceClassification(config).eval()
    randomise(model, torch.Generator().manual_seed(21))
    example = make_inputs(config, "sequence_classification", torch.Generator().manual_seed(22),
                          batch=2, seq=8)
    batch = torch.export.Dim("batch", max=32)
    seq = torch.export.Dim("seq", max=config.max_position_embeddings)
    dims = {"input_ids": (batch, seq), "attention_mask": (batch, seq), "token_type_ids": (batch, seq)}
    program = torch.export.export(model, (), example, dynamic_shapes=dims)
    exported = program.module()
    for b, s in [(1, 5), (4, 13)]:
        inputs = make_inputs(config, "sequence_classification", torch.Generator().manual_seed(b),
                             batch=b, seq=s)
        with torch.no_grad():
            expected = model(**inputs).logits
        got = exported(**inputs)
        assert isinstance(got, sb.ClassifierOutput)
        assert_close(got.logits, expected, "exported logits")


def test_dropout_is_wired():
    config = make_config("g2-relu", "sequence_classification", hidden_dropout_prob=0.1,
                         attention_probs_dropout_prob=0.2)
    model = sb.SqueezeBertForSequenceClassification(config)
    randomise(model, torch.Generator().manual_seed(23))
    inputs = make_inputs(config, "sequence_classification", torch.Generator().manual_seed(24))
    dropouts = {n: m for n, m in model.named_modules() if isinstance(m, nn.Dropout)}
    # embeddings, classifier, and per layer attention / post_attention / output
    assert len(dropouts) == 2 + 3 * config.num_hidden_layers
    for name, module in dropouts.items():
        assert module.p == (0.2 if name.endswith(".attention.dropout") else 0.1), name
    with torch.no_grad():
        model.eval()
        reference = model(**inputs).logits
        assert torch.equal(model(**inputs).logits, reference)            # eval: deterministic
        model.train()
        assert not torch.equal(model(**inputs).logits, model(**inputs).logits)
        # Each dropout module, alone, changes the output in train mode: it is on the path.
        for name, module in dropouts.items():
            for other in dropouts.values():
                other.p = 0.5 if other is module else 0.0
            assert not torch.allclose(model(**inputs).logits, reference), f"{name} is not wired"


def test_masked_lm_decoder_is_tied():
    config = make_config("g2-relu", "masked_lm")
    model = sb.SqueezeBertForMaskedLM(config)
    predictions = model.cls.predictions
    embeddings = model.transformer.embeddings.word_embeddings
    assert predictions.decoder.weight is embeddings.weight
    assert predictions.decoder.bias is predictions.bias
    randomise(model, torch.Generator().manual_seed(25))
    model.load_state_dict(sb.SqueezeBertForMaskedLM(config).state_dict())
    assert predictions.decoder.weight is embeddings.weight            # loading keeps the tie
    assert predictions.decoder.bias is predictions.bias
    names = {n for n, _ in model.named_parameters()}
    assert "cls.predictions.decoder.weight" not in names and "cls.predictions.decoder.bias" not in names
    assert model.tied_weights == transformers.SqueezeBertForMaskedLM._tied_weights_keys
