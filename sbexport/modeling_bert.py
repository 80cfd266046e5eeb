"""BERT in PyTorch, the baseline SqueezeBERT is measured against, top to bottom.

The same model as SqueezeBERT with two differences: the projections are nn.Linear on
[B, S, H] (channels last throughout, so no permutes), and every group count is 1. Layout:

    input_ids [B, S] -> embeddings [B, S, H] -> encoder on [B, S, H] -> last_hidden_state [B, S, H]

Parameter names equal transformers' state_dict keys (bert.embeddings.*, bert.encoder.layer.{i}.*,
bert.pooler.dense, cls.predictions.*, classifier, qa_outputs), so bert-base-uncased and its
fine-tuned checkpoints load unchanged. As in transformers, the masked-LM, token-classification
and question-answering heads have no pooler.

Embeddings, pooler, masks and the heads are the ones in modeling.py; only the encoder is BERT's
own. Written to be exported, like modeling.py: no Python branch on a tensor value,
output_attentions returns the weights after softmax, head_mask works.
"""

from __future__ import annotations

from torch import nn

from .config import BertConfig
from .modeling import (
    Backbone,
    Embeddings,
    ForMaskedLM,
    ForMultipleChoice,
    ForQuestionAnswering,
    ForSequenceClassification,
    ForTokenClassification,
    Pooler,
    activation,
    run_layers,
)


class BertEmbeddings(Embeddings):
    """The shared embeddings, summed in transformers' BERT order: word + token type + position."""

    token_type_first = True


class BertSelfAttention(nn.Module):
    """Multi-head attention with Linear projections, on [B, S, H]."""

    def __init__(self, config: BertConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x, mask=None, head_mask=None):
        """x [B, S, H], mask [B, 1, 1, S] additive -> (context [B, S, H], probs [B, h, S, S])."""
        q = self.query(x).unflatten(-1, (self.num_heads, self.head_size)).transpose(1, 2)  # [B, h, S, d]
        k = self.key(x).unflatten(-1, (self.num_heads, self.head_size)).transpose(1, 2)    # [B, h, S, d]
        v = self.value(x).unflatten(-1, (self.num_heads, self.head_size)).transpose(1, 2)  # [B, h, S, d]
        scores = q @ k.transpose(2, 3) * self.head_size ** -0.5                            # [B, h, S, S]
        if mask is not None:
            scores = scores + mask
        probs = scores.softmax(dim=-1)
        if head_mask is not None:
            probs = probs * head_mask                                                      # [1, h, 1, 1]
        context = self.dropout(probs) @ v                                                  # [B, h, S, d]
        return context.transpose(1, 2).flatten(2), probs                                   # [B, S, H]


class DenseDropoutLayerNorm(nn.Module):
    """Linear, dropout, residual add, LayerNorm: [B, S, Cin] -> [B, S, Cout]."""

    def __init__(self, cin: int, cout: int, dropout_prob: float, eps: float):
        super().__init__()
        self.dense = nn.Linear(cin, cout)
        self.LayerNorm = nn.LayerNorm(cout, eps=eps)
        self.dropout = nn.Dropout(dropout_prob)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class BertAttention(nn.Module):
    """Self-attention (`self`) and its output projection + LayerNorm (`output`), as named in checkpoints."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = DenseDropoutLayerNorm(config.hidden_size, config.hidden_size,
                                            config.hidden_dropout_prob, config.layer_norm_eps)

    def forward(self, x, mask=None, head_mask=None):
        context, probs = self.self(x, mask, head_mask)
        return self.output(context, x), probs


class BertIntermediate(nn.Module):
    """Linear then the activation: [B, S, H] -> [B, S, I]."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, x):
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    """One encoder layer: attention + LN, intermediate, output + LN."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = DenseDropoutLayerNorm(config.intermediate_size, config.hidden_size,
                                            config.hidden_dropout_prob, config.layer_norm_eps)

    def forward(self, x, mask=None, head_mask=None):
        """x [B, S, H] -> (y [B, S, H], attention probs [B, heads, S, S])."""
        x, probs = self.attention(x, mask, head_mask)
        return self.output(self.intermediate(x), x), probs


class BertEncoder(nn.Module):
    """The stack of layers on [B, S, H]."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask=None, head_masks=None, output_attentions=False, output_hidden_states=False):
        return run_layers(self.layer, x, mask, head_masks, output_attentions, output_hidden_states)


class BertModel(Backbone):
    """The bare encoder: last_hidden_state [B, S, H] and pooler_output [B, H] (None without pooler)."""

    config_class = BertConfig

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = Pooler(config) if add_pooling_layer else None
        self.init_weights()


class _BertHead:
    """What every BERT head shares: its config, its backbone and the backbone's name "bert"."""

    config_class = BertConfig
    backbone_class = BertModel
    base_model_prefix = "bert"


class BertForMaskedLM(_BertHead, ForMaskedLM):
    backbone_kwargs = {"add_pooling_layer": False}


class BertForSequenceClassification(_BertHead, ForSequenceClassification):
    pass


class BertForMultipleChoice(_BertHead, ForMultipleChoice):
    pass


class BertForTokenClassification(_BertHead, ForTokenClassification):
    backbone_kwargs = {"add_pooling_layer": False}


class BertForQuestionAnswering(_BertHead, ForQuestionAnswering):
    backbone_kwargs = {"add_pooling_layer": False}
