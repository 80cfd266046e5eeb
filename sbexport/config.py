"""Model configurations: SqueezeBERT and the BERT baseline, read from and written to the
`config.json` of Hugging Face checkpoints.

Both configs keep keys they do not know (in `extra`) so that a config.json survives a round
trip unchanged, and both validate on construction: a bad value raises ConfigError naming the
field, before any weight is allocated.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .atomic import replace_file
from .errors import ConfigError

ACTIVATIONS = ("gelu", "relu", "silu", "gelu_new")
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")


@dataclass
class _ConfigBase:
    """JSON in and out, label maps and the checks both architectures share."""

    model_type: ClassVar[str] = ""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    # Keys of config.json this class does not model (architectures, transformers_version, ...),
    # written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._normalise_labels()
        self.validate()

    # -- labels -------------------------------------------------------------------------

    def _normalise_labels(self) -> None:
        # config.json stores id2label with string keys ("0": "LABEL_0"); we hold ints.
        # id2label is authoritative: its size sets num_labels and label2id is rebuilt from it
        # unless it names exactly the same labels.
        _require_positive_int("num_labels", self.num_labels)
        if self.id2label:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
        else:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        own = {v: k for k, v in self.id2label.items()}
        given = {str(k): int(v) for k, v in (self.label2id or {}).items()}
        self.label2id = given if given == own else own

    # -- validation ---------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ConfigError naming the first field that cannot build a model."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"):
            _require_positive_int(name, getattr(self, name))
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act: unknown activation {self.hidden_act!r}; "
                              f"expected one of {', '.join(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size ({self.hidden_size}) is not divisible by "
                              f"num_attention_heads ({self.num_attention_heads})")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {p!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps: must be positive, got {self.layer_norm_eps!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id ({self.pad_token_id}) is outside the vocabulary "
                              f"(vocab_size {self.vocab_size})")
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type: unknown {self.problem_type!r}; expected one of "
                              f"{', '.join(str(p) for p in PROBLEM_TYPES)}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # -- JSON ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from a config.json dict; unknown keys go to `extra`, `model_type` is checked."""
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(f"model_type: expected {cls.model_type!r}, got {model_type!r}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: data.pop(k) for k in list(data) if k in known}
        return cls(**kwargs, extra=data)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict: transformers' layout, string keys in id2label."""
        out = {"model_type": self.model_type, **self.extra}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        """Read a config.json; raises ConfigError naming the file when it is not valid JSON."""
        return cls.from_dict(_read_json(path))

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write the config.json at `path`, replacing it atomically (a failure leaves the old
        file, never a truncated one). Raises OSError."""
        replace_file(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def replace(self, **changes):
        """A copy with some fields changed (and validated). A new num_labels without new
        labels gets placeholder labels LABEL_0..LABEL_{n-1}."""
        if "num_labels" in changes and "id2label" not in changes:
            changes.update(id2label=None, label2id=None)
        return dataclasses.replace(self, **changes)


@dataclass
class SqueezeBertConfig(_ConfigBase):
    """SqueezeBERT's hyper-parameters, with the defaults of the public API.

    Group counts: each projection is a Conv1d(kernel_size=1, groups=g); g must divide both its
    input and output channels. squeezebert-uncased uses q/k/v 4, post-attention 1,
    intermediate 4, output 4.
    """

    model_type: ClassVar[str] = "squeezebert"

    embedding_size: int = 768
    q_groups: int = 4
    k_groups: int = 4
    v_groups: int = 4
    post_attention_groups: int = 1
    intermediate_groups: int = 4
    output_groups: int = 4

    def validate(self) -> None:
        super().validate()
        if self.embedding_size != self.hidden_size:
            raise ConfigError(f"embedding_size ({self.embedding_size}) must equal hidden_size "
                              f"({self.hidden_size}): the encoder has no projection between them")
        h, i = self.hidden_size, self.intermediate_size
        # (field, input channels, output channels) of each grouped projection
        for name, cin, cout in (("q_groups", h, h), ("k_groups", h, h), ("v_groups", h, h),
                                ("post_attention_groups", h, h), ("intermediate_groups", h, i),
                                ("output_groups", i, h)):
            g = getattr(self, name)
            _require_positive_int(name, g)
            if cin % g or cout % g:
                raise ConfigError(f"{name} ({g}) must divide the projection's input ({cin}) and "
                                  f"output ({cout}) channels")

    @property
    def groups(self) -> dict[str, int]:
        """Group count of each projection, keyed by its module name in a layer."""
        return {"query": self.q_groups, "key": self.k_groups, "value": self.v_groups,
                "post_attention": self.post_attention_groups,
                "intermediate": self.intermediate_groups, "output": self.output_groups}


@dataclass
class BertConfig(_ConfigBase):
    """BERT-base's hyper-parameters (the baseline), transformers' BertConfig layout."""

    model_type: ClassVar[str] = "bert"

    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None

    def validate(self) -> None:
        super().validate()
        p = self.classifier_dropout
        if p is not None and (not isinstance(p, (int, float)) or not 0.0 <= p < 1.0):
            raise ConfigError(f"classifier_dropout: must be in [0, 1) or null, got {p!r}")
        if self.position_embedding_type != "absolute":
            raise ConfigError(f"position_embedding_type: only 'absolute' is supported, got "
                              f"{self.position_embedding_type!r}")


CONFIG_CLASSES = {c.model_type: c for c in (SqueezeBertConfig, BertConfig)}


def load_config(path: str | os.PathLike) -> SqueezeBertConfig | BertConfig:
    """Read a config.json of either architecture, chosen by its model_type."""
    data = _read_json(path)
    model_type = data.get("model_type")
    if model_type not in CONFIG_CLASSES:
        raise ConfigError(f"{path}: model_type {model_type!r} is not one of "
                          f"{', '.join(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[model_type].from_dict(data)


def _read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
