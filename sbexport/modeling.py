"""SqueezeBERT in PyTorch, top to bottom, with every head.

SqueezeBERT (Iandola et al., 2020) is BERT whose query/key/value, post-attention and
feed-forward projections are grouped 1x1 convolutions. Layout:

    input_ids [B, S] -> embeddings [B, S, H] -> permute -> encoder on [B, H, S] (channels
    first, the layout Conv1d wants) -> permute -> last_hidden_state [B, S, H]

Parameter names equal transformers' state_dict keys, so the public checkpoints
(squeezebert/squeezebert-uncased, -mnli, -mnli-headless) load unchanged.

The model is written to be exported: no Python branch on a tensor value, the padding mask
built with tensor ops, and graph-changing options (output_attentions, ...) plain Python bools
decided before tracing. Two behaviours deliberately differ from transformers' implementation:
head_mask works (it raises there), and output_attentions returns the attention weights after
softmax (transformers returns the scores before it, against its own documentation).

The heads (masked LM, sequence classification, multiple choice, token classification,
question answering) are written once over any backbone that returns `BaseModelOutput`; the
BERT baseline in modeling_bert.py reuses them with its own backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _pytree as pytree

from .config import SqueezeBertConfig

# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


@dataclass
class ModelOutput:
    """Named outputs; `to_tuple()` gives the non-None fields in order (return_dict=False).

    Every subclass is registered as a pytree node, so that torch.export can trace a forward that
    returns one (it refuses output types it cannot flatten).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Runs before @dataclass has added the fields; flatten reads them at call time.
        pytree.register_pytree_node(
            cls, lambda out: ([getattr(out, f.name) for f in fields(out)], [f.name for f in fields(out)]),
            lambda values, names: cls(**dict(zip(names, values))),
            serialized_type_name=f"{cls.__module__}.{cls.__qualname__}")

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: int | str):
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor = None   # [B, S, H]
    pooler_output: torch.Tensor = None       # [B, H]
    hidden_states: tuple | None = None       # L+1 x [B, S, H]: embeddings, then each layer
    attentions: tuple | None = None          # L x [B, heads, S, S], after softmax


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor = None              # [B, S, vocab]
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class ClassifierOutput(ModelOutput):
    """Sequence classification [B, labels], multiple choice [B, choices], tokens [B, S, labels]."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class QuestionAnsweringOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor = None        # [B, S]
    end_logits: torch.Tensor = None          # [B, S]
    hidden_states: tuple | None = None
    attentions: tuple | None = None


# --------------------------------------------------------------------------------------
# Pieces shared with the BERT baseline
# --------------------------------------------------------------------------------------


def activation(name: str) -> nn.Module:
    """The config's hidden_act as a module. gelu is the exact (erf) form, gelu_new the tanh one."""
    return {"gelu": nn.GELU(), "gelu_new": nn.GELU(approximate="tanh"),
            "relu": nn.ReLU(), "silu": nn.SiLU()}[name]


def extended_attention_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype):
    """[B, S] of 1 (attend) / 0 (padding) -> additive [B, 1, 1, S]: 0 or dtype's minimum.

    Broadcasts over heads and query positions. Built with tensor ops only, so that export
    keeps the sequence length symbolic.
    """
    if attention_mask is None:
        return None
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


def per_layer_head_mask(head_mask: torch.Tensor | None, num_layers: int,
                        num_heads: int | None = None) -> list:
    """head_mask of shape (heads,) or (layers, heads) -> one [1, heads, 1, 1] mask per layer.

    A mask value multiplies that head's attention probabilities (1 keeps, 0 silences).
    Raises ValueError on any other shape (the head count is checked when num_heads is given).
    """
    if head_mask is None:
        return [None] * num_layers
    heads = "heads" if num_heads is None else num_heads
    if head_mask.dim() == 1:
        head_mask = head_mask.unsqueeze(0).expand(num_layers, -1)
    if (head_mask.dim() != 2 or head_mask.shape[0] != num_layers
            or num_heads is not None and head_mask.shape[1] != num_heads):
        raise ValueError(f"head_mask must have shape ({heads},) or ({num_layers}, {heads}), "
                         f"got {tuple(head_mask.shape)}")
    return [m[None, :, None, None] for m in head_mask]


class Embeddings(nn.Module):
    """word + position + token type embeddings, then LayerNorm and dropout: [B, S] -> [B, S, E]."""

    # fp32 addition does not associate: transformers' BERT adds token type before position,
    # its SqueezeBERT after. Each architecture sums in its peer's order, for bit-equal parity.
    token_type_first: ClassVar[bool] = False

    def __init__(self, config):
        super().__init__()
        width = getattr(config, "embedding_size", config.hidden_size)
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # Not saved: checkpoints do not carry it. Sliced to the sequence length in forward.
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None],
                             persistent=False)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        seq_len = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = self.position_ids[:, :seq_len]          # [1, S], broadcasts over B
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(inputs_embeds[..., 0], dtype=torch.long)
        pos, tok = self.position_embeddings(position_ids), self.token_type_embeddings(token_type_ids)
        x = inputs_embeds + tok + pos if self.token_type_first else inputs_embeds + pos + tok
        return self.dropout(self.LayerNorm(x))


class Pooler(nn.Module):
    """The first token's hidden state through Linear and tanh: [B, S, H] -> [B, H]."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


# --------------------------------------------------------------------------------------
# SqueezeBERT encoder: everything inside runs on [B, C, S]
# --------------------------------------------------------------------------------------


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, S] tensor (permutes to [B, S, C] and back)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 1)).permute(0, 2, 1)


class ConvDropoutLayerNorm(nn.Module):
    """Grouped 1x1 conv, dropout, residual add, LayerNorm: [B, Cin, S] -> [B, Cout, S]."""

    def __init__(self, cin: int, cout: int, groups: int, dropout_prob: float, eps: float):
        super().__init__()
        self.conv1d = nn.Conv1d(cin, cout, kernel_size=1, groups=groups)
        self.layernorm = ChannelLayerNorm(cout, eps=eps)
        self.dropout = nn.Dropout(dropout_prob)

    def forward(self, hidden_states, residual):
        return self.layernorm(self.dropout(self.conv1d(hidden_states)) + residual)


class ConvActivation(nn.Module):
    """Grouped 1x1 conv then the activation: [B, Cin, S] -> [B, Cout, S]."""

    def __init__(self, cin: int, cout: int, groups: int, act: str):
        super().__init__()
        self.conv1d = nn.Conv1d(cin, cout, kernel_size=1, groups=groups)
        self.act = activation(act)

    def forward(self, x):
        return self.act(self.conv1d(x))


class SqueezeBertSelfAttention(nn.Module):
    """Multi-head attention with grouped 1x1 conv projections, on [B, C, S]."""

    def __init__(self, config: SqueezeBertConfig):
        super().__init__()
        c = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Conv1d(c, c, kernel_size=1, groups=config.q_groups)
        self.key = nn.Conv1d(c, c, kernel_size=1, groups=config.k_groups)
        self.value = nn.Conv1d(c, c, kernel_size=1, groups=config.v_groups)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x, mask=None, head_mask=None):
        """x [B, C, S], mask [B*h, 1, S] additive -> (context [B, C, S], probs [B, h, S, S]).

        Heads are folded into the batch so that both products are 3-D bmm, and each reshape
        names its sizes as ints plus one -1 (the sequence): with a fixed batch, ExecuTorch keeps
        them inside the XNNPACK delegate, whose reshape refuses symbolic sizes.
        """
        b, h, d = x.shape[0], self.num_heads, self.head_size
        q = self.query(x).view(b * h, d, -1)                               # [B*h, d, S]
        k = self.key(x).view(b * h, d, -1)                                 # [B*h, d, S]
        v = self.value(x).view(b * h, d, -1)                               # [B*h, d, S]
        scores = torch.bmm(q.transpose(1, 2), k) / math.sqrt(d)            # [B*h, S, S]
        if mask is not None:
            scores = scores + mask
        probs = scores.softmax(dim=-1)
        if head_mask is not None:                                          # [1, h, 1, 1]
            probs = (probs.unflatten(0, (b, h)) * head_mask).flatten(0, 1)
        context = torch.bmm(v, self.dropout(probs).transpose(1, 2))        # [B*h, d, S]
        return context.view(b, h * d, -1), probs.unflatten(0, (b, h))      # [B, C, S], [B, h, S, S]


class SqueezeBertModule(nn.Module):
    """One encoder layer: attention, post-attention conv + LN, intermediate conv, output conv + LN."""

    def __init__(self, config: SqueezeBertConfig):
        super().__init__()
        h, i, p, eps = config.hidden_size, config.intermediate_size, config.hidden_dropout_prob, config.layer_norm_eps
        self.attention = SqueezeBertSelfAttention(config)
        self.post_attention = ConvDropoutLayerNorm(h, h, config.post_attention_groups, p, eps)
        self.intermediate = ConvActivation(h, i, config.intermediate_groups, config.hidden_act)
        self.output = ConvDropoutLayerNorm(i, h, config.output_groups, p, eps)

    def forward(self, x, mask=None, head_mask=None):
        """x [B, H, S] -> (y [B, H, S], attention probs [B, heads, S, S])."""
        context, probs = self.attention(x, mask, head_mask)
        x = self.post_attention(context, x)
        return self.output(self.intermediate(x), x), probs


class SqueezeBertEncoder(nn.Module):
    """The stack of layers; takes and returns [B, S, H], runs on [B, H, S] in between."""

    def __init__(self, config: SqueezeBertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.layers = nn.ModuleList(SqueezeBertModule(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask=None, head_masks=None, output_attentions=False, output_hidden_states=False):
        if mask is not None:   # the attention folds heads into the batch: expand once, not per layer
            mask = mask.expand(-1, self.num_heads, -1, -1).flatten(0, 1)   # [B, 1, 1, S] -> [B*h, 1, S]
        to_bsh = lambda t: t.permute(0, 2, 1)                              # noqa: E731  [B, H, S] <-> [B, S, H]
        x, hidden_states, attentions = run_layers(self.layers, to_bsh(x), mask, head_masks, output_attentions,
                                                  output_hidden_states, view=to_bsh)
        return to_bsh(x), hidden_states, attentions                        # [B, S, H]


def run_layers(layers, x, mask, head_masks, output_attentions: bool, output_hidden_states: bool,
               view=lambda t: t):
    """Run a stack of layers, each `layer(x, mask, head_mask) -> (x, probs)`.

    Returns (x, hidden states or None, attentions or None); hidden states are the input and
    every layer's output passed through `view` (SqueezeBERT's turns [B, H, S] into [B, S, H]).
    """
    hidden_states = (view(x),) if output_hidden_states else None
    attentions = () if output_attentions else None
    for layer, head_mask in zip(layers, head_masks or [None] * len(layers)):
        x, probs = layer(x, mask, head_mask)
        if output_hidden_states:
            hidden_states += (view(x),)
        if output_attentions:
            attentions += (probs,)
    return x, hidden_states, attentions


# --------------------------------------------------------------------------------------
# Backbone and heads
# --------------------------------------------------------------------------------------


def conv_projections(config) -> int:
    """How many grouped 1x1 convolutions a model of `config` holds, which every export must
    keep as native convolutions: six per SqueezeBERT layer (Q, K, V, post-attention,
    intermediate, output); the BERT baseline (its Linear layers) has none."""
    return 6 * config.num_hidden_layers if config.model_type == "squeezebert" else 0


class PreTrainedModel(nn.Module):
    """A config, weight initialisation, and loading / saving through sbexport.checkpoints.

    Subclasses set `config_class`, and heads set `backbone_class` and `base_model_prefix`
    (the state_dict prefix of the backbone: "transformer" for SqueezeBERT, "bert" for BERT).
    `tied_weights` maps a parameter name to the one it shares storage with.
    """

    config_class: ClassVar[type] = SqueezeBertConfig
    base_model_prefix: ClassVar[str] = "transformer"

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config

    def init_weights(self) -> None:
        """Normal(0, initializer_range) weights, zero biases, unit LayerNorms (BERT's recipe)."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=std)
                if m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.tie_weights()

    @property
    def tied_weights(self) -> dict[str, str]:
        """Parameter name -> the name of the parameter it shares (none here; heads add theirs)."""
        return {}

    def tie_weights(self) -> None:
        """Make every parameter in `tied_weights` the same Parameter as its source."""
        for name, source in self.tied_weights.items():
            module, _, attr = name.rpartition(".")
            setattr(self.get_submodule(module), attr, self.get_parameter(source))

    @classmethod
    def from_pretrained(cls, path_or_id: str, **kwargs):
        """Load a checkpoint (local folder, HF cache, or Hub); see checkpoints.load_pretrained."""
        from .checkpoints import load_pretrained
        return load_pretrained(cls, path_or_id, **kwargs)

    def save_pretrained(self, folder: str) -> None:
        """Write config.json and model.safetensors that transformers loads back."""
        from .checkpoints import save_pretrained
        save_pretrained(self, folder)


class Backbone(PreTrainedModel):
    """Embeddings, an encoder and an optional pooler: the forward SqueezeBERT and BERT share.

    Subclasses build `embeddings`, `encoder` (x [B, S, H] -> (x, hidden states, attentions))
    and `pooler` (None when a head does not use it).
    """

    base_model_prefix = ""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                head_mask=None, inputs_embeds=None, output_attentions=False,
                output_hidden_states=False, return_dict=True):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # [B, S, H]
        mask = extended_attention_mask(attention_mask, x.dtype)                    # [B, 1, 1, S]
        head_masks = per_layer_head_mask(head_mask, self.config.num_hidden_layers,
                                         self.config.num_attention_heads)
        x, hidden_states, attentions = self.encoder(x, mask, head_masks, output_attentions,
                                                    output_hidden_states)
        pooled = self.pooler(x) if self.pooler is not None else None
        out = BaseModelOutput(x, pooled, hidden_states, attentions)
        return out if return_dict else out.to_tuple()


class SqueezeBertModel(Backbone):
    """The bare encoder: last_hidden_state [B, S, H] and pooler_output [B, H]."""

    def __init__(self, config: SqueezeBertConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.encoder = SqueezeBertEncoder(config)
        self.pooler = Pooler(config)
        self.init_weights()


class _Head(PreTrainedModel):
    """A backbone under `base_model_prefix` plus one small head; forward args as the backbone's."""

    backbone_class: ClassVar[type] = SqueezeBertModel
    # Extra arguments for the backbone, e.g. {"add_pooling_layer": False} for BERT heads that,
    # as in transformers, carry no pooler weights.
    backbone_kwargs: ClassVar[dict] = {}

    def __init__(self, config):
        super().__init__(config)
        self.add_module(self.base_model_prefix, self.backbone_class(config, **self.backbone_kwargs))

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    def run_backbone(self, input_ids, attention_mask, token_type_ids, position_ids, head_mask,
                     inputs_embeds, output_attentions, output_hidden_states) -> BaseModelOutput:
        return self.backbone(input_ids, attention_mask, token_type_ids, position_ids, head_mask,
                             inputs_embeds, output_attentions, output_hidden_states)


def classifier_dropout(config) -> float:
    """BERT's config may set classifier_dropout; otherwise the heads use hidden_dropout_prob."""
    p = getattr(config, "classifier_dropout", None)
    return config.hidden_dropout_prob if p is None else p


class LMPredictionHead(nn.Module):
    """dense, activation, LayerNorm, then the decoder tied to the word embeddings: [B, S, H] -> [B, S, V]."""

    def __init__(self, config):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform.transform_act_fn = activation(config.hidden_act)
        self.transform.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias   # one bias under two names, as in the checkpoints

    def forward(self, x):
        t = self.transform
        return self.decoder(t.LayerNorm(t.transform_act_fn(t.dense(x))))


class ForMaskedLM(_Head):
    """Masked language model: logits over the vocabulary at every position."""

    def __init__(self, config):
        super().__init__(config)
        self.cls = nn.Module()
        self.cls.predictions = LMPredictionHead(config)
        self.init_weights()

    @property
    def tied_weights(self) -> dict[str, str]:
        return {"cls.predictions.decoder.weight": f"{self.base_model_prefix}.embeddings.word_embeddings.weight",
                "cls.predictions.decoder.bias": "cls.predictions.bias"}

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                head_mask=None, inputs_embeds=None, labels=None, output_attentions=False,
                output_hidden_states=False, return_dict=True):
        base = self.run_backbone(input_ids, attention_mask, token_type_ids, position_ids, head_mask,
                                 inputs_embeds, output_attentions, output_hidden_states)
        logits = self.cls.predictions(base.last_hidden_state)              # [B, S, V]
        loss = None
        if labels is not None:   # -100 marks positions that are not predicted
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        out = MaskedLMOutput(loss, logits, base.hidden_states, base.attentions)
        return out if return_dict else out.to_tuple()


def sequence_classification_loss(logits, labels, problem_type: str | None):
    """The loss transformers picks: MSE for one label (regression), cross-entropy for integer
    labels, BCE-with-logits otherwise (multi-label). problem_type, when set, decides."""
    num_labels = logits.shape[-1]
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class ForSequenceClassification(_Head):
    """Pooled output, dropout, Linear: [B, num_labels] (one label: regression, as for STS-B)."""

    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                head_mask=None, inputs_embeds=None, labels=None, output_attentions=False,
                output_hidden_states=False, return_dict=True):
        base = self.run_backbone(input_ids, attention_mask, token_type_ids, position_ids, head_mask,
                                 inputs_embeds, output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(base.pooler_output))         # [B, labels]
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config.problem_type)
        out = ClassifierOutput(loss, logits, base.hidden_states, base.attentions)
        return out if return_dict else out.to_tuple()


class ForMultipleChoice(_Head):
    """Every (context, choice) pair scored by one Linear on the pooled output: [B, num_choices].

    Inputs are [B, num_choices, S]; they are flattened to [B * num_choices, S] for the backbone.
    """

    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                head_mask=None, inputs_embeds=None, labels=None, output_attentions=False,
                output_hidden_states=False, return_dict=True):
        num_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        flat = [t.flatten(0, 1) if t is not None else None                 # [B*C, S(, H)]
                for t in (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)]
        base = self.run_backbone(*flat[:4], head_mask, flat[4], output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(base.pooler_output)).view(-1, num_choices)  # [B, C]
        loss = None if labels is None else F.cross_entropy(logits, labels)
        out = ClassifierOutput(loss, logits, base.hidden_states, base.attentions)
        return out if return_dict else out.to_tuple()


class ForTokenClassification(_Head):
    """A label for every token: [B, S, num_labels]."""

    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                head_mask=None, inputs_embeds=None, labels=None, output_attentions=False,
                output_hidden_states=False, return_dict=True):
        base = self.run_backbone(input_ids, attention_mask, token_type_ids, position_ids, head_mask,
                                 inputs_embeds, output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(base.last_hidden_state))     # [B, S, labels]
        loss = None
        if labels is not None:   # -100 marks positions without a label
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        out = ClassifierOutput(loss, logits, base.hidden_states, base.attentions)
        return out if return_dict else out.to_tuple()


class ForQuestionAnswering(_Head):
    """Extractive QA: start and end logits over the positions, [B, S] each.

    The output layer is always 2 wide (start, end); a config's num_labels does not change it.
    """

    def __init__(self, config):
        super().__init__(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                head_mask=None, inputs_embeds=None, start_positions=None, end_positions=None,
                output_attentions=False, output_hidden_states=False, return_dict=True):
        base = self.run_backbone(input_ids, attention_mask, token_type_ids, position_ids, head_mask,
                                 inputs_embeds, output_attentions, output_hidden_states)
        start, end = self.qa_outputs(base.last_hidden_state).unbind(-1)    # [B, S] each
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (_span_loss(start, start_positions) + _span_loss(end, end_positions)) / 2
        out = QuestionAnsweringOutput(loss, start, end, base.hidden_states, base.attentions)
        return out if return_dict else out.to_tuple()


def _span_loss(logits, positions):
    """Cross-entropy of [B, S] logits against positions; positions outside [0, S) are ignored."""
    seq_len = logits.shape[1]
    positions = positions.reshape(-1).clamp(0, seq_len)   # out of range -> S, the ignored index
    return F.cross_entropy(logits, positions, ignore_index=seq_len)


class SqueezeBertForMaskedLM(ForMaskedLM):
    pass


class SqueezeBertForSequenceClassification(ForSequenceClassification):
    pass


class SqueezeBertForMultipleChoice(ForMultipleChoice):
    pass


class SqueezeBertForTokenClassification(ForTokenClassification):
    pass


class SqueezeBertForQuestionAnswering(ForQuestionAnswering):
    pass
