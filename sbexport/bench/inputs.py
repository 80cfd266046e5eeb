"""What a benchmark is asked to do (BenchConfig) and the check of all of it before any work.

    check(config) -> Inputs(task, threads, models)

Every refusal is one SbexportError line naming the option, raised before a second is spent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import load_config
from ..errors import SbexportError
from ..source import ModelSource, random_init_config, resolve_source
from ..tasks import Task, get_task

RUNTIMES = ("eager", "onnx", "executorch")       # fp32: the default run
# Other forms of a runtime's file, each timed as a runtime of its own so that both rows sit in
# one run: the int8 form of an fp32 runtime (its export quantized, export/quantize.py; `bench
# --quantize int8` adds them) and ExecuTorch's per-group export (each grouped convolution one
# dense convolution per group, export/layout.py; `bench --grouped-conv per-group` adds it).
INT8_RUNTIMES = {"onnx": "onnx-int8"}
PER_GROUP_RUNTIMES = {"executorch": "executorch-per-group"}


def fp32_runtime(runtime: str) -> str:
    """The fp32 runtime that `runtime` runs on: itself, or the one whose file it is another form of."""
    forms = {**INT8_RUNTIMES, **PER_GROUP_RUNTIMES}
    return next((fp32 for fp32, form in forms.items() if form == runtime), runtime)
MODELS = ("squeezebert", "bert")
LABELS = {"squeezebert": "SqueezeBERT", "bert": "BERT-base"}


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark. The CLI fills it from its options.

    checkpoints: arch -> checkpoint folder or Hub id. An arch not named runs with random
    weights from `seed` (latency does not depend on the weights), at the public architecture's
    size or, when `configs` names it, at that size (arch -> a config.json path, or a
    SqueezeBertConfig / BertConfig: a custom size, such as a 2-layer model; the task's labels
    are put on it).
    """

    task: str = "mnli"
    seq_lens: tuple[int, ...] = (8, 32, 128, 512)
    batch: int = 1
    threads: int | None = None            # None: every core this process may use
    warmup: int = 3
    runs: int = 20
    formats: tuple[str, ...] = RUNTIMES
    models: tuple[str, ...] = MODELS
    checkpoints: dict = field(default_factory=dict)
    configs: dict = field(default_factory=dict)
    random_init: bool = False             # random weights for every model (refused beside a checkpoint)
    workdir: str | None = None            # export cache; None: a temporary folder, removed after
    verify: bool = True                   # parity-check each export before timing it
    memory: bool = True                   # peak memory per row, measured apart (see memory.py)
    seed: int = 0
    sgemm_size: int = 2048


@dataclass(frozen=True)
class BenchModel:
    """One model of the comparison: where it comes from and the config it is built with.

    `build_config` is the exact config of a random-init model (source.random_init_config),
    None for a checkpoint (built from its own config.json); `config` is the config either way,
    read without building the model (shapes: vocab_size for the inputs, the position limit)."""

    arch: str
    source: ModelSource
    config: object                        # SqueezeBertConfig or BertConfig
    build_config: object | None = None


@dataclass(frozen=True)
class Inputs:
    task: Task
    threads: int
    models: list[BenchModel]


def check(config: BenchConfig, cores: int) -> Inputs:
    """Check everything the run depends on; return the task, the thread count (config.threads,
    else `cores`: those the target may use) and the models. Raises SbexportError naming the
    option at fault."""
    task = get_task(config.task)
    _check_choices(config)
    _check_counts(config)
    threads = config.threads if config.threads is not None else cores
    if threads < 1:
        raise SbexportError(f"--threads must be at least 1 (got {threads})")
    for name, given in (("checkpoint", config.checkpoints), ("config", config.configs)):
        unknown = set(given) - set(MODELS)
        if unknown:
            raise SbexportError(f"{name} given for unknown model {sorted(unknown)[0]!r}")
    _check_unused(config)
    models = [bench_model(task, arch, config) for arch in config.models]
    for model in models:
        _check_lengths(model, config.seq_lens)
    if config.workdir:
        _check_folder(Path(config.workdir))
    return Inputs(task, threads, models)


def bench_model(task: Task, arch: str, config: BenchConfig) -> BenchModel:
    """The BenchModel of `arch` as `config` asks for it; raises SbexportError for a missing
    checkpoint or config file, or both given for one model."""
    checkpoint, shape = config.checkpoints.get(arch), config.configs.get(arch)
    if checkpoint and shape is not None:
        raise SbexportError(f"--config-{arch} applies to random weights only, not to the {arch} checkpoint")
    source = resolve_source(task, model=checkpoint, random_init=config.random_init or checkpoint is None,
                            arch=arch, seed=config.seed, model_option=f"--model-{arch}")
    if not source.random_init:
        return bench_model_of(source)
    if not isinstance(shape, (str, os.PathLike)):      # None (the public size) or a config object
        return bench_model_of(source, random_init_config(task, arch, shape))
    try:
        return bench_model_of(source, random_init_config(task, arch, load_config(shape)))
    except OSError as e:
        raise SbexportError(f"--config-{arch} {shape}: cannot read it ({e.strerror or e})") from None
    except SbexportError as e:     # config.py's errors may start with the path already
        raise SbexportError(f"--config-{arch} {shape}: {str(e).removeprefix(f'{shape}: ')}") from None


def bench_model_of(source: ModelSource, build_config=None) -> BenchModel:
    """The BenchModel of `source`: random weights at `build_config`, or the checkpoint with its
    own config.json. Raises SbexportError when the checkpoint is of another architecture."""
    if build_config is not None:
        return BenchModel(source.arch, source, build_config, build_config)
    own = load_config(Path(source.resolved_path) / "config.json")
    if own.model_type != source.arch:
        raise SbexportError(f"{source.checkpoint}: a {own.model_type} checkpoint, given as the {source.arch} model")
    return BenchModel(source.arch, source, own)


def refuse_duplicates(values, option: str) -> None:
    """Raise SbexportError naming the first value `option` lists twice: it would time the same
    thing twice, as two rows, and count it twice in the progress bar's total."""
    seen = set()
    for v in values:
        if v in seen:
            raise SbexportError(f"{option} names {v} twice; give each once")
        seen.add(v)


def _check_choices(config: BenchConfig) -> None:
    runtimes = RUNTIMES + tuple(INT8_RUNTIMES.values()) + tuple(PER_GROUP_RUNTIMES.values())
    for name, values, allowed in (("runtime", config.formats, runtimes), ("model", config.models, MODELS)):
        if not values:
            raise SbexportError(f"no {name} given; choose from {', '.join(allowed)}")
        for v in values:
            if v not in allowed:
                raise SbexportError(f"unknown {name} {v!r}; expected one of {', '.join(allowed)}")
        refuse_duplicates(values, f"--{name}s")


def _check_unused(config: BenchConfig) -> None:
    """Refuse a checkpoint or config of a model --models leaves out: the user meant it to be
    used, and a run without it is not the run asked for."""
    for option, given in (("--model", config.checkpoints), ("--config", config.configs)):
        for arch in given:
            if arch not in config.models:
                raise SbexportError(f"{option}-{arch} applies to the {arch} model, which --models leaves out "
                                    f"({','.join(config.models)}); drop it or add {arch} to --models")


def _check_counts(config: BenchConfig) -> None:
    if config.runs < 1:
        raise SbexportError(f"--runs must be at least 1 (got {config.runs}): no timed run, no statistics")
    if config.warmup < 0:
        raise SbexportError(f"--warmup must be 0 or more (got {config.warmup})")
    if config.batch < 1:
        raise SbexportError(f"--batch must be at least 1 (got {config.batch})")
    if not config.seq_lens or any(not isinstance(s, int) or s < 1 for s in config.seq_lens):
        raise SbexportError(f"--seq-lens must be positive integers (got {list(config.seq_lens)})")
    refuse_duplicates(config.seq_lens, "--seq-lens")


def _check_lengths(model: BenchModel, seq_lens) -> None:
    limit = model.config.max_position_embeddings
    too_long = [s for s in seq_lens if s > limit]
    if too_long:
        raise SbexportError(f"sequence length {max(too_long)} exceeds the {LABELS[model.arch]} model's maximum of "
                            f"{limit} (max_position_embeddings); use --seq-lens up to {limit}")


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise SbexportError(f"--workdir {folder} exists and is not a folder")
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        raise SbexportError(f"--workdir {folder}: cannot create or write it ({existing} is not writable)")
