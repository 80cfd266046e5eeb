"""BERT checkpoint -> SqueezeBERT checkpoint with every group count 1.

A SqueezeBERT whose convolutions all have one group is BERT: a 1x1 Conv1d with weight
[out, in, 1] on [B, in, S] computes what nn.Linear with weight [out, in] computes on [B, S, in].
So the conversion renames tensors and adds a trailing axis to the projection weights; it is
exact in arithmetic. It is not bit-exact in floating point: conv and linear kernels sum in
different orders (on MiniLM-L6, outputs up to ~5 in magnitude differ by ~2e-5, ~5e-6 relative).

    bert.encoder.layer.{i}.attention.self.query      -> transformer.encoder.layers.{i}.attention.query
    bert.encoder.layer.{i}.attention.output.dense    -> ...layers.{i}.post_attention.conv1d
    bert.encoder.layer.{i}.attention.output.LayerNorm -> ...layers.{i}.post_attention.layernorm
    bert.encoder.layer.{i}.intermediate.dense        -> ...layers.{i}.intermediate.conv1d
    bert.encoder.layer.{i}.output.dense              -> ...layers.{i}.output.conv1d
    bert.encoder.layer.{i}.output.LayerNorm          -> ...layers.{i}.output.layernorm
    bert.* (embeddings, pooler)                      -> transformer.*
    heads (cls.*, classifier, qa_outputs)            unchanged
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from . import __version__
from .artifact import CHECKPOINT, check_destination, check_outside, output_folder, staged_folder, write_record
from .checkpoints import load_pretrained, read_state_dict, resolve_checkpoint, write_safetensors
from .config import BertConfig, SqueezeBertConfig, load_config
from .errors import CheckpointError
from .heads import BASE, HEADS, MASKED_LM

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# Module inside a BERT layer -> the SqueezeBERT module it becomes, and whether it is a
# projection (Linear -> Conv1d) rather than a LayerNorm.
LAYER_MODULES = {
    "attention.self.query": ("attention.query", True),
    "attention.self.key": ("attention.key", True),
    "attention.self.value": ("attention.value", True),
    "attention.output.dense": ("post_attention.conv1d", True),
    "attention.output.LayerNorm": ("post_attention.layernorm", False),
    "intermediate.dense": ("intermediate.conv1d", True),
    "output.dense": ("output.conv1d", True),
    "output.LayerNorm": ("output.layernorm", False),
}
LAYER_KEY = re.compile(r"^(?P<prefix>(?:bert\.)?)encoder\.layer\.(?P<i>\d+)\.(?P<module>.+)\.(?P<param>\w+)$")
# Old checkpoints (bert-base-uncased's own) name LayerNorm parameters as TensorFlow did.
LEGACY_PARAMS = {"gamma": "weight", "beta": "bias"}
# Buffers, not weights: recomputed by every model, persistent only in old checkpoints.
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# Tied aliases: the decoder shares the word embeddings and cls.predictions.bias; loaders re-tie.
TIED = {"cls.predictions.decoder.weight": "embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias"}


def convert_bert_to_squeezebert(src: str | Path, dst: str | Path, *, overwrite: bool = False,
                                log: Callable[[str], None] = print) -> Path:
    """Write the SqueezeBERT equivalent of the BERT checkpoint `src` into the folder `dst`.

    src is a folder with config.json and weights (safetensors, pytorch_model.bin, or a sharded
    index of either), or a Hub id already in the Hugging Face cache. dst gets config.json
    (the BERT config with embedding_size = hidden_size and every *_groups = 1; labels,
    problem_type and other fields kept), model.safetensors (dtype kept) and the tokenizer files
    src has, and sbexport-checkpoint.json listing them (the proof that a later --overwrite may
    replace the folder). It is written in a temporary folder, checked by loading it into the
    matching sbexport SqueezeBERT class, and renamed into place. `log` gets notes about what
    killed conversions left beside dst.
    Returns dst. Raises SbexportError when dst is empty, is src or inside it, exists and not
    overwrite (or holds anything but what an earlier conversion wrote: see
    artifact.check_destination);
    CheckpointError when src is missing, not a BERT checkpoint (naming the model_type found),
    or holds a tensor the mapping does not know; ConfigError for an invalid config.json.
    """
    dst = output_folder(dst)
    folder = resolve_checkpoint(str(src), local_files_only=True)
    check_outside(folder, dst, "source checkpoint")
    check_destination(dst, overwrite, CHECKPOINT)      # before reading the weights
    bert = load_config(folder / "config.json")
    if not isinstance(bert, BertConfig):
        raise CheckpointError(f"{folder / 'config.json'}: model_type is {bert.model_type!r}, not "
                              f"'bert'; convert-bert takes a BERT checkpoint")
    model_class = _squeezebert_class(bert)
    config = squeezebert_config(bert, model_class.__name__)
    state = convert_state_dict(read_state_dict(folder), folder)
    with staged_folder(dst, overwrite, CHECKPOINT, log) as tmp:
        write_safetensors(tmp / "model.safetensors", state)
        config.to_json_file(tmp / "config.json")
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
        try:   # every tensor accounted for, every shape as the config gives
            load_pretrained(model_class, str(tmp))
        except CheckpointError as e:
            raise CheckpointError(f"{folder}: the converted weights do not load into "
                                  f"{model_class.__name__}: {e}") from None
        write_record(tmp, CHECKPOINT, {"sbexport_version": __version__, "converted_from": str(src)})
    return dst


def squeezebert_config(bert: BertConfig, architecture: str = "SqueezeBertModel") -> SqueezeBertConfig:
    """The SqueezeBERT config that computes what `bert` computes: one group everywhere."""
    shared = {f.name: getattr(bert, f.name) for f in dataclasses.fields(SqueezeBertConfig)
              if hasattr(bert, f.name)}
    extra = {**bert.extra, "architectures": [architecture]}
    if bert.classifier_dropout is not None:   # no field in SqueezeBertConfig; transformers reads it
        extra["classifier_dropout"] = bert.classifier_dropout
    return SqueezeBertConfig(**{**shared, "extra": extra}, embedding_size=bert.hidden_size,
                             q_groups=1, k_groups=1, v_groups=1, post_attention_groups=1,
                             intermediate_groups=1, output_groups=1)


def convert_state_dict(state: dict[str, torch.Tensor], origin: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """BERT tensor names and shapes -> SqueezeBERT's (see the module docstring).

    Drops buffers and tied aliases whose source is present. Raises CheckpointError naming
    origin and the tensor for a layer tensor the mapping does not know.
    """
    out = {}
    for key, tensor in state.items():
        if key.endswith(BUFFERS):
            continue
        match = LAYER_KEY.match(key)
        if match:
            if match["module"] not in LAYER_MODULES:
                raise CheckpointError(f"{origin}: tensor {key} is not part of a BERT encoder layer "
                                      f"(known modules: {', '.join(LAYER_MODULES)})")
            module, projection = LAYER_MODULES[match["module"]]
            param = LEGACY_PARAMS.get(match["param"], match["param"])
            key = f"{match['prefix']}encoder.layers.{match['i']}.{module}.{param}"
            if projection and param == "weight":
                tensor = tensor.unsqueeze(-1)                      # Linear [out, in] -> Conv1d [out, in, 1]
        elif ".LayerNorm." in key:
            key = re.sub(r"\.(gamma|beta)$", lambda m: "." + LEGACY_PARAMS[m[1]], key)
        out[re.sub(r"^bert\.", "transformer.", key)] = tensor.contiguous()
    for alias, source in TIED.items():
        if alias in out and any(k == source or k.endswith("." + source) for k in out):
            del out[alias]
    return out


def _squeezebert_class(bert: BertConfig) -> type:
    """The SqueezeBERT class of the checkpoint's architecture: the head whose BERT class it
    names (BertForX -> SqueezeBertForX); BERT's pre-training head becomes the masked LM,
    anything else the bare model."""
    architecture = (bert.extra.get("architectures") or ["BertModel"])[0]
    by_name = {head.model_class("bert").__name__: head for head in HEADS.values()}
    head = MASKED_LM if architecture == "BertForPreTraining" else by_name.get(architecture, BASE)
    return head.model_class("squeezebert")
