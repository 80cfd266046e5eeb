"""Parity of sbexport's BERT baseline with transformers' BERT: same state_dict (strict both
ways), same outputs within 1e-5 on tiny random configs, attentions after softmax, losses,
head_mask, and torch.export with a dynamic batch and sequence."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import tiny_bert_config

from sbexport import modeling_bert
from sbexport.config import ACTIVATIONS, BertConfig
from sbexport.modeling import ModelOutput
from sbexport.tasks import HEADS, TASKS

ATOL = 1e-5   # fp32, same op order as transformers' eager BERT: differences are rounding only
BATCH, CHOICES, SEQ = 3, 2, 7


def build_pair(head: str, config: BertConfig, seed: int = 0):
    """(ours, transformers') for a head kind, in eval mode, with the same random weights.

    Weights are drawn wider than the init (std 0.02) so that attention is far from uniform and
    every layer moves the output; LayerNorm scales stay around 1.
    """
    torch.manual_seed(seed)
    ours = HEADS[head].model_class("bert")(config).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("LayerNorm.weight")
                    else 0.3 * torch.randn_like(p))
    tconfig = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"},
                                      attn_implementation="eager")
    theirs = getattr(transformers, HEADS[head].model_class("bert").__name__)(tconfig).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    # and back: transformers' keys are exactly ours
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def make_inputs(head: str, config: BertConfig, seed: int = 1) -> dict:
    """A right-padded batch with two segments: rows of length SEQ, SEQ-2 and 3."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([SEQ, SEQ - 2, 3])
    input_ids = torch.randint(1, config.vocab_size, (BATCH, SEQ), generator=g)
    attention_mask = (torch.arange(SEQ)[None] < lengths[:, None]).long()
    token_type_ids = (torch.arange(SEQ)[None] >= (lengths[:, None] // 2)).long() * attention_mask
    input_ids = input_ids * attention_mask   # padding id 0
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    if head == "multiple-choice":   # [B, C, S]: each choice a rolled copy
        inputs = {k: torch.stack([v.roll(c, 0) for c in range(CHOICES)], 1) for k, v in inputs.items()}
    return inputs


def make_labels(head: str, config: BertConfig, problem_type: str | None = None) -> dict:
    g = torch.Generator().manual_seed(2)
    if head == "masked-lm":
        labels = torch.randint(0, config.vocab_size, (BATCH, SEQ), generator=g)
        labels[:, ::2] = -100
        return {"labels": labels}
    if head == "sequence-classification":
        if problem_type == "regression":
            return {"labels": torch.randn(BATCH, generator=g)}
        if problem_type == "multi_label_classification":
            return {"labels": torch.randint(0, 2, (BATCH, config.num_labels), generator=g).float()}
        return {"labels": torch.randint(0, config.num_labels, (BATCH,), generator=g)}
    if head == "multiple-choice":
        return {"labels": torch.randint(0, CHOICES, (BATCH,), generator=g)}
    if head == "token-classification":
        labels = torch.randint(0, config.num_labels, (BATCH, SEQ), generator=g)
        labels[0, -1] = -100
        return {"labels": labels}
    if head == "question-answering":   # SEQ + 5 is out of range: ignored by both
        return {"start_positions": torch.tensor([0, 2, SEQ + 5]), "end_positions": torch.tensor([3, 4, 1])}
    return {}


def assert_outputs_close(ours: ModelOutput, theirs, atol: float = ATOL) -> None:
    """Every non-None field of ours (tensors and tuples of tensors) against transformers' field."""
    for name, got in vars(ours).items():
        if got is None:
            continue
        want = getattr(theirs, name)
        assert want is not None, f"transformers returned no {name}"
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        assert len(got) == len(want), f"{name}: {len(got)} tensors, transformers {len(want)}"
        for i, (a, b) in enumerate(zip(got, want)):
            assert a.shape == b.shape, f"{name}[{i}]: shape {tuple(a.shape)} vs {tuple(b.shape)}"
            diff = (a - b).abs().max().item()
            assert diff <= atol, f"{name}[{i}]: max |diff| {diff:.3g} > {atol}"


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("head", list(HEADS))
def test_parity_with_transformers(head, act):
    config = tiny_bert_config(hidden_act=act)
    ours, theirs = build_pair(head, config)
    inputs = {**make_inputs(head, config), **make_labels(head, config)}
    with torch.no_grad():
        got = ours(**inputs, output_attentions=True, output_hidden_states=True)
        want = theirs(**inputs, output_attentions=True, output_hidden_states=True)
    assert len(got.attentions) == config.num_hidden_layers
    assert len(got.hidden_states) == config.num_hidden_layers + 1
    assert all(torch.allclose(a.sum(-1), torch.ones(())) for a in got.attentions), "not after softmax"
    if head != "base":
        assert got.loss is not None
    assert_outputs_close(got, want)


@pytest.mark.parametrize("problem_type", ["regression", "single_label_classification",
                                          "multi_label_classification"])
def test_sequence_classification_losses(problem_type):
    num_labels = 1 if problem_type == "regression" else 3
    config = tiny_bert_config(num_labels=num_labels)   # problem_type None: inferred from labels
    ours, theirs = build_pair("sequence-classification", config)
    inputs = {**make_inputs("sequence-classification", config),
              **make_labels("sequence-classification", config, problem_type)}
    with torch.no_grad():
        got, want = ours(**inputs), theirs(**inputs)
    assert theirs.config.problem_type == problem_type   # what transformers inferred
    assert_outputs_close(got, want)


def test_defaults_are_bert_base():
    config = BertConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.vocab_size) == (768, 12, 12, 3072, 30522)


def test_heads_without_pooler_as_in_transformers():
    config = tiny_bert_config()
    for head in ("masked-lm", "token-classification", "question-answering"):
        model = HEADS[head].model_class("bert")(config)
        assert model.bert.pooler is None
        assert not any(k.startswith("bert.pooler") for k in model.state_dict())
    out = modeling_bert.BertModel(config, add_pooling_layer=False)(torch.ones(1, 4, dtype=torch.long))
    assert out.pooler_output is None and out.last_hidden_state.shape == (1, 4, config.hidden_size)


def test_mlm_decoder_tied_to_word_embeddings():
    model = modeling_bert.BertForMaskedLM(tiny_bert_config())
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias


@pytest.mark.parametrize("head", ["base", "sequence-classification"])
def test_head_mask(head):
    """transformers' BERT has no head_mask; scaling a head's probabilities by m equals scaling
    its value projection by m (probs @ (m v) = (m probs) @ v), which transformers can run."""
    config = tiny_bert_config()
    ours, theirs = build_pair(head, config)
    head_mask = torch.tensor([[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 1.0]])   # (layers, heads)
    d = config.head_size
    with torch.no_grad():
        for layer, m in zip(theirs.base_model.encoder.layer, head_mask):
            value = layer.attention.self.value
            scale = m.repeat_interleave(d)                                     # [H]
            value.weight.mul_(scale[:, None])
            value.bias.mul_(scale)
        inputs = make_inputs(head, config)
        got = ours(**inputs, head_mask=head_mask, output_attentions=True)
        want = theirs(**inputs, output_attentions=True)
    for a, b, m in zip(got.attentions, want.attentions, head_mask):
        assert (a - b * m[None, :, None, None]).abs().max() <= ATOL   # ours: after the head mask
    got.attentions = None
    assert_outputs_close(got, want)
    # one row (heads,) applies to every layer
    with torch.no_grad():
        same = ours(**inputs, head_mask=torch.tensor([1.0, 0.0, 1.0, 1.0]))
        expanded = ours(**inputs, head_mask=torch.tensor([[1.0, 0.0, 1.0, 1.0]] * 2))
    assert torch.equal(same.to_tuple()[0], expanded.to_tuple()[0])
    for wrong in (torch.ones(3, 4), torch.ones(2, 1)):   # 3 layers; 1 head would broadcast silently
        with pytest.raises(ValueError, match="head_mask"):
            ours(**inputs, head_mask=wrong)


def test_every_task_has_a_bert_class():
    for task in TASKS.values():
        cls = task.model_class("bert")
        assert cls.config_class is BertConfig, task.name


class _Tuple(torch.nn.Module):
    """Positional inputs, tuple outputs: what export sees."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids, attention_mask, token_type_ids, return_dict=False)


@pytest.mark.parametrize("head", ["base", "multiple-choice"])
def test_torch_export_dynamic_batch_and_sequence(head):
    config = tiny_bert_config()
    model = _Tuple(HEADS[head].model_class("bert")(config).eval())
    inputs = tuple(make_inputs(head, config).values())
    batch = torch.export.Dim("batch", min=1, max=64)
    seq = torch.export.Dim("sequence", min=2, max=config.max_position_embeddings)
    axes = {0: batch, 1: torch.export.Dim("choices", min=1, max=8), 2: seq} \
        if head == "multiple-choice" else {0: batch, 1: seq}
    exported = torch.export.export(model, inputs, dynamic_shapes=(axes,) * 3)
    # run at another batch and sequence length than traced
    other = tuple(t[:2, ..., :5] for t in inputs)         # batch 2, sequence 5
    with torch.no_grad():
        for args in (inputs, other):
            for a, b in zip(exported.module()(*args), model(*args)):
                assert a.shape == b.shape
                assert (a - b).abs().max() <= ATOL


@pytest.mark.parametrize("head", list(HEADS))
def test_loads_checkpoints_transformers_saved(head, tmp_path):
    """A checkpoint transformers' BERT saved (tied decoder left out, no pooler in the MLM, token
    and QA heads) loads through from_pretrained and gives transformers' outputs."""
    config = tiny_bert_config(num_labels=2)
    _, theirs = build_pair(head, config)
    theirs.save_pretrained(tmp_path)
    ours = HEADS[head].model_class("bert").from_pretrained(str(tmp_path))
    inputs = make_inputs(head, config)
    with torch.no_grad():
        assert_outputs_close(ours(**inputs), theirs(**inputs))
