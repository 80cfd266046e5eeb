"""Checkpoints: find them (a local folder, the Hugging Face cache, the Hub), read their weights
(model.safetensors, pytorch_model.bin, sharded indexes of either), load them into a model with
every tensor accounted for, and save them so that transformers loads them back.

Loading never initialises a tensor randomly without saying so: a tensor the file lacks is an
error, unless it belongs to the head and the caller allowed that (then a warning names it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import warnings
from pathlib import Path

import huggingface_hub
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .atomic import replacing
from .config import load_config
from .errors import CheckpointError, ConfigError, first_line

logger = logging.getLogger(__name__)

# Where the weights can be, in the order transformers prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
# What a Hub download fetches: config, weights, tokenizer. Not TF/Flax/ONNX weights.
DOWNLOAD_PATTERNS = ["config.json", "*.safetensors", "*.bin", "*.index.json", "vocab.txt",
                     "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
# Backbone prefixes of head checkpoints, stripped when a bare model loads one.
BACKBONE_PREFIXES = ("transformer", "bert")
# Tensors old checkpoints carry that no model needs: buffers that transformers before 4.31
# saved (position_ids, token_type_ids).
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
# TensorFlow-era LayerNorm names (bert-base-uncased's own files), renamed as transformers does.
LEGACY_NAMES = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))
# Top-level modules of the heads (masked LM / pre-training, classifiers, QA). A checkpoint's
# tensors under one of these that the model being loaded lacks belong to another head: they
# are dropped (logged at info level), as transformers does. Any other unknown tensor is an error.
HEAD_MODULES = ("cls", "classifier", "qa_outputs")
# Heads whose outputs do not read pooler_output: a checkpoint without pooler weights loses
# nothing there (transformers' BertForMaskedLM saves none).
POOLER_UNUSED_HEADS = ("ForMaskedLM", "ForTokenClassification", "ForQuestionAnswering")
# Tensor name fragment -> the config fields that decide its shape, for mismatch messages.
SHAPE_FIELDS = (
    ("word_embeddings.", "vocab_size, embedding_size"),
    ("position_embeddings.", "max_position_embeddings"),
    ("token_type_embeddings.", "type_vocab_size"),
    ("attention.query.", "q_groups"),
    ("attention.key.", "k_groups"),
    ("attention.value.", "v_groups"),
    ("post_attention.conv1d.", "post_attention_groups"),
    ("intermediate.", "intermediate_size, intermediate_groups"),
    ("output.conv1d.", "intermediate_size, output_groups"),
    ("classifier.", "num_labels"),
    ("cls.predictions.", "vocab_size"),
)
MAX_LISTED = 20   # names listed in one message before "... and N more"


# --------------------------------------------------------------------------------------
# Finding a checkpoint
# --------------------------------------------------------------------------------------


def resolve_checkpoint(path_or_id: str, *, revision: str | None = None,
                       local_files_only: bool | None = None) -> Path:
    """The folder holding a checkpoint's config.json and weights.

    Takes a local folder path or a Hub repo id ("squeezebert/squeezebert-mnli"). Looks in
    order at: the local folder; the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
    ~/.cache/huggingface/hub) at `revision` (default "main"); the Hub, unless offline
    (local_files_only=True, or HF_HUB_OFFLINE=1 / TRANSFORMERS_OFFLINE=1 set, which
    local_files_only=False does not override).
    Returns the folder (for the cache and the Hub, a snapshot folder inside the cache).
    Raises CheckpointError when a local-looking path is not a checkpoint folder, or when the id
    is neither cached nor downloadable; the message names the ways to provide it.
    """
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return _require_checkpoint_files(path)
    if _looks_local(path_or_id):
        raise CheckpointError(_not_a_folder_message(path_or_id, path))
    cache_dir = hf_cache_dir()
    folder = _find_in_cache(path_or_id, revision, cache_dir)
    if folder is not None:
        return folder
    if _offline(local_files_only):
        reason = ("this command reads local checkpoints only (local_files_only=True)" if local_files_only
                  else "HF_HUB_OFFLINE is set") + f" and it is not in the Hugging Face cache at {cache_dir}"
        raise CheckpointError(_unavailable_message(path_or_id, revision, cache_dir, reason,
                                                   can_download=not local_files_only))
    return _download(path_or_id, revision, cache_dir)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time.

    huggingface_hub reads these variables once, at import; reading them here keeps a change
    of HF_HUB_CACHE (a test's monkeypatch, a CLI flag) effective.
    """
    env = os.environ
    folder = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not folder:
        home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
        folder = os.path.join(home, "hub")
    return Path(os.path.expandvars(folder)).expanduser()


def _offline(local_files_only: bool | None) -> bool:
    """local_files_only=True, or HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set (which win over
    local_files_only=False, as in transformers: the variable promises no network use)."""
    if local_files_only:
        return True
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.upper() in ("1", "ON", "YES", "TRUE") or hf_constants.HF_HUB_OFFLINE


def _looks_local(path_or_id: str) -> bool:
    """True for explicit paths, existing files, partly existing paths and invalid repo ids."""
    if path_or_id.startswith((".", "/", "~", "\\")) or os.path.isabs(path_or_id):
        return True
    path = Path(path_or_id)
    if path.exists() or (len(path.parts) > 1 and path.parent.is_dir()):
        return True
    try:
        validate_repo_id(path_or_id)
    except HFValidationError:
        return True
    return False


def _not_a_folder_message(path_or_id: str, path: Path) -> str:
    if path.exists():
        return (f"{path_or_id}: is a file, not a checkpoint folder; pass the folder that holds "
                f"config.json and the weights")
    parent = next((p for p in path.parents if p.is_dir()), None)
    where = f" ({parent} exists, {path.relative_to(parent)} does not)" if parent else ""
    try:
        validate_repo_id(path_or_id)
        not_an_id = ""
    except HFValidationError as e:
        not_an_id = f"; nor is it a Hugging Face repo id ({e})"
    return f"{path_or_id}: no such checkpoint folder{where}{not_an_id}"


def _require_checkpoint_files(folder: Path) -> Path:
    """folder if it holds config.json and weights; raises CheckpointError listing it otherwise."""
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json, not a checkpoint folder; it holds: "
                              f"{_listing(folder)}")
    weights_entry(folder)
    return folder


def _has_checkpoint_files(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / n).is_file() for n in WEIGHT_FILES)


def _find_in_cache(repo_id: str, revision: str | None, cache_dir: Path) -> Path | None:
    """The cached snapshot of repo_id at revision, or None if absent or incomplete.

    huggingface_hub resolves refs/<revision> (or a commit hash) to snapshots/<hash>/ and
    rejects a snapshot its tree cache knows to be partial; we also require config + weights.
    """
    try:
        folder = Path(huggingface_hub.snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True,
            allow_patterns=DOWNLOAD_PATTERNS))
    except LocalEntryNotFoundError:   # also IncompleteSnapshotError
        return None
    return folder if _has_checkpoint_files(folder) else None


def _download(repo_id: str, revision: str | None, cache_dir: Path) -> Path:
    """Fetch config, weights and tokenizer files from the Hub into the cache; returns the snapshot."""
    try:
        folder = Path(huggingface_hub.snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=DOWNLOAD_PATTERNS))
    except RevisionNotFoundError as e:
        raise CheckpointError(f"{repo_id}: the Hub has no revision {revision!r}") from e
    except RepositoryNotFoundError as e:   # also GatedRepoError
        reason = "the Hub says it does not exist or needs a login (`hf auth login`)"
        raise CheckpointError(_unavailable_message(repo_id, revision, cache_dir, reason)) from e
    except OSError as e:   # LocalEntryNotFoundError, HfHubHTTPError: no connection, Hub down
        reason = f"the Hub could not be reached ({type(e).__name__})"
        raise CheckpointError(_unavailable_message(repo_id, revision, cache_dir, reason)) from e
    if not _has_checkpoint_files(folder):
        raise CheckpointError(f"{repo_id}: downloaded, but the repository has no config.json "
                              f"with PyTorch weights; it holds: {_listing(folder)}")
    return folder


def _unavailable_message(repo_id: str, revision: str | None, cache_dir: Path, reason: str,
                         can_download: bool = True) -> str:
    """The one-line refusal of a checkpoint that is neither a folder nor cached: the ways to
    provide it (going online only where the caller would download)."""
    at = f" at revision {revision!r}" if revision else ""
    online = ("; (3) go online: with a connection to the Hub and HF_HUB_OFFLINE unset, it is "
              "downloaded into that cache") if can_download else ""
    return (f"checkpoint {repo_id!r}{at} is not available: {reason}. Provide it one of "
            f"{'three' if can_download else 'two'} ways: (1) a local folder: pass the path of a folder "
            f"holding config.json and model.safetensors or pytorch_model.bin; (2) a pre-populated "
            f"Hugging Face cache: on a connected machine run `hf download {repo_id}` "
            f"(`huggingface-cli download {repo_id}` with huggingface_hub < 1.0) and copy the cache to "
            f"{cache_dir} or point HF_HUB_CACHE at it{online}")


def _listing(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names) if names else "nothing (empty folder)"


# --------------------------------------------------------------------------------------
# Reading weights
# --------------------------------------------------------------------------------------


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint folder, by name, in the dtype stored.

    Reads model.safetensors, else a sharded model.safetensors.index.json, else
    pytorch_model.bin (weights only, no code runs), else pytorch_model.bin.index.json.
    Raises CheckpointError naming the file when it is corrupt, truncated or not weights, when a
    shard is missing, or (listing the folder) when there are no weights at all.
    """
    return _read_weights(weights_entry(Path(folder)))[0]


def weight_files(folder: Path) -> list[Path]:
    """The files read_state_dict reads: one weights file, or an index followed by its shards."""
    entry = weights_entry(Path(folder))
    if not entry.name.endswith(".index.json"):
        return [entry]
    return [entry, *(_shard_path(entry, s) for s in sorted(set(_read_index(entry).values())))]


def checkpoint_fingerprint(folder: Path) -> str:
    """sha256 hex digest over the weight files' names, sizes and bytes (see weight_files)."""
    digest = hashlib.sha256()
    for path in weight_files(folder):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def weights_entry(folder: Path) -> Path:
    """The weights file (or shard index) loading reads: the first of WEIGHT_FILES present.

    Raises CheckpointError listing the folder when it holds none of them.
    """
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: no weights (looked for {', '.join(WEIGHT_FILES)}); "
                          f"the folder holds: {_listing(folder)}")


def _read_weights(entry: Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """(state dict, the file each tensor came from) of a weights file or shard index."""
    if entry.name.endswith(".index.json"):
        return _read_sharded(entry)
    state = _read_file(entry)
    return state, dict.fromkeys(state, entry)


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    return _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it may be "
                              f"truncated or corrupt: delete it and fetch it again") from None


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises anything from UnpicklingError to RuntimeError and OSError on a bad
    # file; all of them mean the same to the user.
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: "
                              f"{first_line(e, 200)}); it may be truncated, corrupt or hold objects "
                              f"other than tensors: delete it and fetch it again") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of "
                              f"named tensors")
    return state


def _read_index(index: Path) -> dict[str, str]:
    """The weight_map of a sharded checkpoint's index: tensor name -> shard file name."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: not a shard index (a JSON object with a weight_map): "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"{index}: weight_map must map tensor names to shard file names")
    return weight_map


def _shard_path(index: Path, shard: str) -> Path:
    """The shard's path; raises CheckpointError if it is missing or outside the folder."""
    path = index.parent / shard
    if Path(shard).is_absolute() or ".." in Path(shard).parts:
        raise CheckpointError(f"{index}: shard {shard!r} is not a file name inside the folder")
    if not path.is_file():
        tensors = sorted(k for k, v in _read_index(index).items() if v == shard)
        raise CheckpointError(f"{path}: shard missing (the index {index.name} lists "
                              f"{_names(tensors)} in it); fetch the checkpoint again")
    return path


def _read_sharded(index: Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    weight_map = _read_index(index)
    state, sources = {}, {}
    for shard in sorted(set(weight_map.values())):
        path = _shard_path(index, shard)
        tensors = _read_file(path)
        state.update(tensors)
        sources.update(dict.fromkeys(tensors, path))
    absent = sorted(name for name in weight_map if name not in state)
    if absent:
        raise CheckpointError(f"{index}: lists tensors its shards do not hold: "
                              + "; ".join(f"{n} (in {weight_map[n]})" for n in absent[:MAX_LISTED]))
    return state, sources


# --------------------------------------------------------------------------------------
# Loading into a model
# --------------------------------------------------------------------------------------


def load_pretrained(cls, path_or_id: str, *, allow_missing_head: bool = False, config=None,
                    revision: str | None = None, local_files_only: bool | None = None,
                    **config_overrides):
    """A `cls` model with the checkpoint's weights, in eval mode, parameters in float32.

    Takes a model class (SqueezeBertModel, SqueezeBertFor..., or the BERT baseline's), a local
    folder or Hub id (see resolve_checkpoint), optionally a config to use instead of the
    checkpoint's config.json, and config fields to override (num_labels=3, ...).
    Head and bare checkpoints load into either kind of class, as in transformers: a head class
    adds its backbone prefix to a bare checkpoint; a bare class strips "transformer."/"bert."
    and drops the head tensors (logged at info level). With allow_missing_head, head tensors the
    checkpoint lacks keep their random initialisation and a warning names them.
    Raises ConfigError when the config does not suit `cls` (model_type) or an override is
    invalid; CheckpointError when a tensor is missing, unexpected, or of another shape than the
    config gives (the message names the tensor and its file), and for unreadable checkpoints.
    """
    folder = resolve_checkpoint(path_or_id, revision=revision, local_files_only=local_files_only)
    config = _model_config(cls, folder, config, config_overrides)
    model = cls(config)
    entry = weights_entry(folder)
    state, sources = _read_weights(entry)
    _load_weights(model, state, sources, entry, allow_missing_head)
    return model.eval()


def _model_config(cls, folder: Path, config, overrides: dict):
    """The checkpoint's config (or the given one), checked against cls, with overrides applied."""
    source = "the config passed" if config is not None else str(folder / "config.json")
    if config is None:
        config = load_config(folder / "config.json")
    if not isinstance(config, cls.config_class):
        raise ConfigError(f"{source}: model_type {config.model_type!r} cannot be loaded into "
                          f"{cls.__name__}, which needs model_type "
                          f"{cls.config_class.model_type!r}")
    return _apply_overrides(config, overrides)


def _apply_overrides(config, overrides: dict):
    """config with fields replaced; raises ConfigError naming a field the config lacks."""
    if not overrides:
        return config
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(config)})
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not a field of {type(config).__name__}")
    if "num_labels" in overrides and "id2label" not in overrides \
            and overrides["num_labels"] != len(config.id2label):
        # The config takes num_labels from id2label when it has one: drop the old label names
        # so that the new count wins (transformers does the same).
        overrides = {**overrides, "id2label": None, "label2id": None}
    return config.replace(**overrides)


def _load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor],
                  sources: dict[str, Path], origin: Path, allow_missing_head: bool) -> None:
    """Copy state into model after accounting for every tensor on both sides.

    origin is the weights file (or index) named in messages about the checkpoint as a whole;
    sources names the file of each tensor. Raises CheckpointError (see load_pretrained).
    """
    expected = model.state_dict()   # includes tied aliases, excludes position_ids
    aliases = dict(model.tied_weights)
    state, sources = _rename_legacy(state, sources)
    state, sources = _align_prefix(state, sources, model.base_model_prefix, expected)
    state = _fold_tied(state, aliases, origin)
    state = {k: v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}
    state = _drop_other_heads(state, model, origin)
    state = _drop_absent_pooler(state, expected, model, origin)
    missing = _without_unused_pooler(model, sorted(set(expected) - set(state) - set(aliases)), origin)
    unexpected = sorted(set(state) - set(expected))
    if missing and not unexpected and allow_missing_head and _all_head(model, missing):
        _warn_random_head(model, missing, origin)
        missing = []
    if missing or unexpected:
        raise CheckpointError(_key_mismatch_message(model, missing, unexpected, origin))
    _check_shapes(model, state, expected, sources)
    result = model.load_state_dict({k: _as_float32(v) for k, v in state.items()}, strict=False)
    # Everything was accounted for above; this guards the bookkeeping itself.
    assert not result.unexpected_keys, result.unexpected_keys


def _rename_legacy(state: dict, sources: dict) -> tuple[dict, dict]:
    """LayerNorm.gamma / .beta -> LayerNorm.weight / .bias."""
    rename = {}
    for k in state:
        old = next((pair for pair in LEGACY_NAMES if k.endswith(pair[0])), None)
        rename[k] = k[: -len(old[0])] + old[1] if old else k
    return ({rename[k]: v for k, v in state.items()},
            {rename[k]: v for k, v in sources.items()})


def _align_prefix(state: dict, sources: dict, prefix: str, expected: dict) -> tuple[dict, dict]:
    """Rename checkpoint tensors to the model's layout (backbone prefix added or stripped)."""
    if prefix and not any(k.startswith(prefix + ".") for k in state):
        # A bare-model checkpoint under a head class: every tensor belongs to the backbone.
        rename = {k: f"{prefix}.{k}" for k in state}
    elif not prefix and not any(k in expected for k in state):
        strip = next((p for p in BACKBONE_PREFIXES if any(k.startswith(p + ".") for k in state)), None)
        if strip is None:
            return state, sources
        # A head checkpoint under the bare class: backbone tensors lose the prefix; the head's
        # keep their names, for _drop_other_heads.
        rename = {k: k.removeprefix(strip + ".") for k in state}
    else:
        return state, sources
    return ({rename[k]: v for k, v in state.items()},
            {rename[k]: v for k, v in sources.items()})


def _fold_tied(state: dict, aliases: dict[str, str], origin: Path) -> dict:
    """Drop tied aliases (decoder.weight, ...); an alias stored without its source becomes it.

    Raises CheckpointError when both are stored and differ (an untied checkpoint,
    tie_word_embeddings false): the model ties them, so one of the two would be lost.
    """
    state = dict(state)
    for alias, source in aliases.items():
        if alias not in state:
            continue
        value = state.pop(alias)
        if source not in state:
            state[source] = value
        elif state[source].shape != value.shape or not torch.equal(state[source], value.to(state[source].dtype)):
            raise CheckpointError(f"{origin}: {alias} differs from {source}, which the model ties "
                                  f"it to; untied checkpoints (tie_word_embeddings false) are "
                                  f"not supported")
    return state


def _drop_other_heads(state: dict, model: torch.nn.Module, origin: Path) -> dict:
    """state without the tensors of heads the model does not have (the masked-LM head "cls.*"
    of squeezebert-uncased under a QA model, a classifier under the bare model), logged."""
    own = {name for name, _ in model.named_children()}
    other = sorted(k for k in state if k.split(".")[0] in HEAD_MODULES and k.split(".")[0] not in own)
    if other:
        logger.info("%s: ignoring %d tensors of a head %s does not have: %s", origin,
                    len(other), type(model).__name__, _names(other))
    return {k: v for k, v in state.items() if k not in other}


def _drop_absent_pooler(state: dict, expected: dict, model, origin: Path) -> dict:
    """state without pooler tensors when the model has no pooler (the BERT baseline's masked-LM,
    token and QA heads, as in transformers, loading bert-base-uncased), logged."""
    if any(_is_pooler(k) for k in expected):
        return state
    pooler = sorted(k for k in state if _is_pooler(k))
    if pooler:
        logger.info("%s: ignoring the pooler tensors, %s has no pooler: %s", origin,
                    type(model).__name__, _names(pooler))
    return {k: v for k, v in state.items() if k not in pooler}


def _is_pooler(name: str) -> bool:
    return ".pooler." in f".{name}"


def _without_unused_pooler(model, missing: list[str], origin: Path) -> list[str]:
    """missing less the pooler, for heads whose outputs do not read it (logged)."""
    pooler = [n for n in missing if _is_pooler(n)]
    if not pooler or not any(type(model).__name__.endswith(h) for h in POOLER_UNUSED_HEADS):
        return missing
    logger.info("%s: no pooler weights; %s does not use the pooler", origin, type(model).__name__)
    return [n for n in missing if n not in pooler]


def _all_head(model, names: list[str]) -> bool:
    """True if every name belongs to the head, not the backbone. The pooler counts as head
    here (it is BERT's pre-training head) where the outputs read it."""
    prefix = model.base_model_prefix
    backbone = prefix + "." if prefix else ""
    return all((prefix and not n.startswith(backbone)) or n.startswith(backbone + "pooler.")
               for n in names)


def _warn_random_head(model, missing: list[str], origin: Path) -> None:
    std = model.config.initializer_range
    # stacklevel 4: _load_weights, load_pretrained, then the caller (or its from_pretrained)
    warnings.warn(f"{origin}: no weights for {', '.join(missing)} of {type(model).__name__}: "
                  f"these head tensors were initialised randomly (normal, std {std}, biases 0); "
                  f"fine-tune the model before using its outputs", stacklevel=4)


def _key_mismatch_message(model, missing: list[str], unexpected: list[str], origin: Path) -> str:
    name = type(model).__name__
    parts = []
    if missing:
        parts.append(f"missing {_count(missing, 'tensor')} {name} needs: {_names(missing)}")
    if unexpected:
        parts.append(f"{_count(unexpected, 'unexpected tensor')} {name} has no place for: "
                     f"{_names(unexpected)}")
    hint = _layer_count_hint(model, missing + unexpected)
    if missing and not unexpected and _all_head(model, missing):
        hint = ("the checkpoint has no weights for this head; pass allow_missing_head=True to "
                "initialise them randomly for fine-tuning")
    return f"{origin}: " + "; ".join(parts) + (f" ({hint})" if hint else "")


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _layer_count_hint(model, names: list[str]) -> str:
    layers = {int(m.group(1)) for n in names if (m := re.search(r"\.layers?\.(\d+)\.", n))}
    if not layers or max(layers) < model.config.num_hidden_layers:
        return ""
    return (f"config and weights disagree on num_hidden_layers: the config says "
            f"{model.config.num_hidden_layers}, the file has layer {max(layers)}")


def _check_shapes(model, state: dict, expected: dict, sources: dict) -> None:
    """Raise CheckpointError naming every tensor whose shape differs from the config's."""
    wrong = [k for k in sorted(state) if state[k].shape != expected[k].shape]
    if not wrong:
        return
    details = "; ".join(
        f"{k} in {sources.get(k, '?')}: the config ({_shape_fields(k)}) gives "
        f"{tuple(expected[k].shape)}, the file holds {tuple(state[k].shape)}"
        for k in wrong[:MAX_LISTED])
    more = f"; ... and {len(wrong) - MAX_LISTED} more" if len(wrong) > MAX_LISTED else ""
    raise CheckpointError(f"config and weights disagree for {type(model).__name__}: "
                          f"{details}{more}")


def _shape_fields(name: str) -> str:
    return next((f for frag, f in SHAPE_FIELDS if frag in name),
                "hidden_size, intermediate_size, num_attention_heads")


def _as_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor


def _names(names: list[str]) -> str:
    more = f", ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------


def save_pretrained(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Write config.json and model.safetensors into folder (created if needed).

    config.json is the config plus "architectures": [the class name], which is transformers'
    class name too. model.safetensors holds every tensor except tied aliases (safetensors
    refuses shared storage; transformers re-ties them on load). Both files are written to
    temporary files in the folder and renamed into place, weights first, so that a failure
    while writing leaves the previous files (or none), never a half-written file. (Between the
    two renames, new weights sit beside the old config: two files cannot be swapped at once.)
    Raises OSError when the folder cannot be written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.replace(extra={**model.config.extra,
                                         "architectures": [type(model).__name__]})
    aliases = set(model.tied_weights)
    tensors = {k: v.detach().cpu().contiguous()
               for k, v in model.state_dict().items() if k not in aliases}
    _write_atomically(folder, [
        ("model.safetensors", lambda p: write_safetensors(p, tensors)),
        ("config.json", config.to_json_file),
    ])


def write_safetensors(path: str | os.PathLike, tensors: dict) -> None:
    """Write `tensors` as a safetensors file at `path` with the umask's permissions (an
    existing file keeps its own). safetensors' save_file makes its files 0600, which other
    users of a shared model folder cannot read."""
    with open(path, "wb") as f:
        f.write(save(tensors, metadata={"format": "pt"}))


def _write_atomically(folder: Path, writers: list) -> None:
    """Run each (name, write(path)) into a temporary file in folder, then rename all in order
    (atomic.replacing: a failure removes every temporary file and renames nothing more)."""
    with contextlib.ExitStack() as stack:
        # Entered last to first: the stack unwinds (renames) in reverse order of entry.
        temps = [(stack.enter_context(replacing(folder / name)), write) for name, write in reversed(writers)]
        for tmp, write in reversed(temps):
            write(tmp)
