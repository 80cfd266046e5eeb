"""The artifact's manifest.json as a typed record: built by the export, turned into JSON and
read back (and validated) here only. Everyone else reads attributes, never string keys.

    Manifest.from_json(data, where) -> Manifest   (raises ManifestInvalid naming the field)
    manifest.to_json() -> dict                     (without the schema, files and content hash,
                                                    which artifact.write_manifest adds)

Schema SCHEMA ("sbexport.artifact/3"). /3 over /2: the format's own facts moved under
"details" (OnnxDetails / ExecuTorchDetails) instead of being merged into the top level, the
union of every format's options is gone (the details say what the file was exported with),
and "reference_sha256" records the sha256 of the reference's weights at export, so that
verify can tell a rebuilt reference that is not the exported one from a parity failure.

Validation is done from these dataclasses' own annotations (`parse`), not with jsonschema: a
JSON schema would be a second description of every field, to be kept in step with these
classes by hand (two places to add a field); here the annotation is the schema. The checks a
type cannot express are code either way: a Range's 1 <= min <= max (`parse`), the model file
among the hashed files (`Manifest.check`).

Adding a field (int8's quantization, a device's facts): add it to Manifest, or to a format's
details class, with its type, and nothing else: writing, reading and validating follow the
annotations. A field every artifact must have: give it no default and bump SCHEMA (older
folders are then refused with "re-export"). An optional one: give it a default of None, and
older /3 folders stay readable. int8's `quantization` and `agreement` are such optional
fields: fp32 manifests are unchanged by them, so the schema stayed /3.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass

from .source import ModelSource

SCHEMA = "sbexport.artifact/3"
SCHEMA_VERSION = 3

# [min, max] of a dimension, 1 <= min <= max; min == max is a fixed dimension.
Range = tuple[int, int]


class ManifestInvalid(ValueError):
    """A manifest field that is missing, of the wrong type or out of range; the message names
    the field (dotted: "dims.sequence", "files['model.onnx'].sha256")."""


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class TensorSpec:
    dtype: str                    # "int64" inputs, "float32" outputs
    axes: tuple[str, ...]         # named axes, e.g. ("batch", "sequence")


@dataclass(frozen=True)
class Dims:
    """The range of every dynamic dimension the file accepts."""

    batch: Range
    sequence: Range
    choices: Range | None = None      # multiple choice only

    @property
    def fixed_batch(self) -> bool:
        """Whether the file takes exactly one batch size (an ExecuTorch program)."""
        return self.batch[0] == self.batch[1]


@dataclass(frozen=True)
class OnnxGraph:
    ops: dict[str, int]               # op type -> count, most common first
    conv_groups: dict[str, int]       # group count (as text) -> Conv nodes with it


@dataclass(frozen=True)
class OnnxDetails:
    """What the ONNX exporter records about its file."""

    opset: int
    onnx_version: str
    graph: OnnxGraph

    @property
    def summary(self) -> str:
        """One line for `sbexport info`."""
        groups = ", ".join(f"{n} x group {g}" for g, n in self.graph.conv_groups.items()) or "none"
        return f"ONNX opset {self.opset} (onnx {self.onnx_version}), Conv nodes: {groups}"


@dataclass(frozen=True)
class ExecuTorchGraph:
    delegates: int
    convolutions_in_delegate: int
    convolutions_outside_delegate: int
    ops_outside_delegate: dict[str, int]
    # int8 programs only (export/quantize_executorch.py): convolutions inside the delegate whose
    # input and weights are int8 (dequantized into them); absent from fp32 manifests
    quantized_convolutions: int | None = None
    # fp32 XNNPACK programs: convolutions inside the delegate that compute a LayerNorm's channel
    # mean or variance (export/layout.py's DelegatedLayerNorm), counted apart from the projections
    layernorm_convolutions: int | None = None


@dataclass(frozen=True)
class ExecuTorchDetails:
    """What the ExecuTorch exporter records about its program."""

    backend: str                      # "xnnpack" or "portable"
    executorch_version: str
    graph: ExecuTorchGraph
    # export --grouped-conv's opt-ins: "per-group" (each grouped convolution exported as one dense
    # convolution per group, all in the delegate) or "runner-kernel" (the grouped convolutions
    # left outside the delegate for the native runner's registered kernel); absent (None) from
    # default programs
    grouped_conv: str | None = None

    @property
    def summary(self) -> str:
        """One line for `sbexport info`."""
        g = self.graph
        int8 = f" ({g.quantized_convolutions} int8)" if g.quantized_convolutions is not None else ""
        norms = f" (+{g.layernorm_convolutions} for LayerNorms)" if g.layernorm_convolutions else ""
        kernel = " (grouped, for the runner's kernel)" if self.grouped_conv == "runner-kernel" else ""
        per_group = " (one per group)" if self.grouped_conv == "per-group" else ""
        return (f"ExecuTorch {self.executorch_version}, {self.backend}: {g.delegates} delegate(s), "
                f"convolutions {g.convolutions_in_delegate} inside{per_group}{int8}{norms}, "
                f"{g.convolutions_outside_delegate} outside{kernel}")


# format -> its details class: the only place a format's name picks a type.
DETAILS: dict[str, type] = {"onnx": OnnxDetails, "executorch": ExecuTorchDetails}


@dataclass(frozen=True)
class OutputFigures:
    """verify's figures for one output (verify.OutputParity, as recorded)."""

    name: str
    max_abs: float
    padded_max_abs: float
    scale: float
    bound: float
    fraction: float
    argmax_agree: int
    argmax_total: int
    topk_agree: int
    topk_total: int


@dataclass(frozen=True)
class ParityFigures:
    """The last verify's verdict and figures (verify.ParityReport.to_dict())."""

    passed: bool
    atol: float
    rtol: float
    cases: int
    outputs: dict[str, OutputFigures]

    @property
    def worst(self) -> OutputFigures:
        """The output nearest its bound (the largest error among equals)."""
        return max(self.outputs.values(), key=lambda o: (o.fraction, o.max_abs))

    @classmethod
    def from_json(cls, data: dict) -> ParityFigures:
        """Raises ManifestInvalid naming the field."""
        return parse(cls, data, "parity")


@dataclass(frozen=True)
class Recipe:
    """How ONNX Runtime quantizes the graph (the arguments of quantize_static / quantize_dynamic):
    what export.quantize uses and what an int8 manifest records. Defaults: the measured fastest
    form for SqueezeBERT (export/quantize.py's docstring)."""

    mode: str = "static"                       # "static" (calibrated) or "dynamic"
    quant_format: str = "QOperator"            # QOperator: QLinearConv in the file itself
    # Conv only: the projections. Adding "Gather" stores the embedding tables int8 too (MiniLM's
    # file: 91 MB fp32, 60 MB int8 convs, 24 MB with int8 embeddings) but costs agreement where
    # heads have small margins (MiniLM mnli, random classifier: 34/36 labels against 36/36; tiny
    # swag 35/36): not the default. None: every op ONNX Runtime covers.
    op_types: tuple[str, ...] | None = ("Conv",)
    per_channel: bool = True                   # one weight scale per output channel
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"                 # ONNX Runtime makes per-channel Conv weights s8 anyway
    # How the file stores those s8 weights. "s8": as they are, ONNX Runtime's fast u8 x s8 kernel,
    # exact on arm64 and on x86 with VNNI, but on x86 without it (AVX2 only: AMD Zen 3, Intel
    # before Ice Lake) it adds pairs of products in int16 (VPMADDUBSW) and saturates. "u8": the
    # same numbers plus 128 with zero point 128, run by the u8 x u8 kernel, exact on every CPU
    # and as slow as fp32 on VNNI (MiniLM, Intel kind, seq 128: u8 x s8 31 ms, u8 x u8 54 ms,
    # fp32 57 ms, under load). tests/test_quantize_avx2.py runs both under qemu -cpu Haswell.
    weight_storage: str = "s8"
    reduce_range: bool = False                 # 7-bit weights: ONNX Runtime's AVX2 fix, costs agreement
    calibrate_method: str = "MinMax"
    equalize: bool = True                      # per-channel activation scales first (equalize.py)


@dataclass(frozen=True)
class CalibrationSet:
    """The texts a static recipe calibrated on."""

    source: str                       # the file's path, or "built-in:<name>"
    sha256: str                       # of the file's bytes
    lines: int                        # text lines read
    examples: int                     # model inputs encoded from them


@dataclass(frozen=True)
class Quantization:
    """How an int8 artifact was made from its fp32 one, and the guard's bars (verify re-judges
    by them)."""

    recipe: Recipe
    calibration: CalibrationSet | None    # None: dynamic (no calibration)
    min_agreement: float                  # 0..1
    max_metric_drop: float                # fraction (0.01: one point)
    fp32_parity: ParityFigures | None     # the fp32 artifact's verify figures, when it had them


@dataclass(frozen=True)
class MeasureFigures:
    """One decision of the accuracy guard (agreement.Measure, as recorded)."""

    agree: int
    total: int
    rate: float                       # NaN when total is 0
    min_cosine: float | None          # embeddings only


@dataclass(frozen=True)
class ErrorFigures:
    """An output's error at real positions (agreement.OutputError, as recorded)."""

    max_abs: float
    mean_abs: float
    scale: float


@dataclass(frozen=True)
class GroupFigures:
    cases: int
    measures: dict[str, MeasureFigures]
    errors: dict[str, ErrorFigures]


@dataclass(frozen=True)
class AgreementFigures:
    """The accuracy guard's verdict and figures for an int8 artifact
    (agreement.AgreementReport.to_dict())."""

    passed: bool
    judged_by: str                    # "agreement"
    judged: str | None                # the group the bar judged: "sentences" or "sweep"
    min_agreement: float
    agreement: float                  # the lowest judged agreement, 0..1 (NaN: no case)
    cases: int
    max_metric_drop: float
    eval_data: str | None
    metric_drops: dict[str, float]    # eval metric -> fp32 - int8 (fractions)
    groups: dict[str, GroupFigures]

    @classmethod
    def from_json(cls, data: dict) -> AgreementFigures:
        """Raises ManifestInvalid naming the field."""
        return parse(cls, data, "agreement")


@dataclass(frozen=True)
class Manifest:
    """Everything an artifact folder says about itself. Built by export.export_artifact (with
    no `files`: artifact.write_manifest hashes the folder); `parity` is set by verify. An int8
    artifact (export.quantize) has `quantization` and, once guarded, `agreement` instead of
    `parity`."""

    format: str                       # a key of DETAILS
    description: str
    model_file: str
    task: str
    head: str
    arch: str
    model_class: str
    labels: tuple[str, ...]           # one per output column of a labelled head, else ()
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    dims: Dims
    num_choices: int | None
    source: ModelSource
    reference_sha256: str             # source.weights_sha256 of the reference at export
    details: OnnxDetails | ExecuTorchDetails
    sbexport_version: str
    torch_version: str
    export_seconds: float
    files: dict[str, FileEntry]       # name -> sha256 and size of every other file of the folder
    parity: ParityFigures | None = None
    # int8 artifacts only (export/quantize.py); absent from fp32 manifests, so those are unchanged
    quantization: Quantization | None = None
    agreement: AgreementFigures | None = None       # set by the accuracy guard (agreement.py)

    def to_json(self) -> dict:
        """The JSON object of every field (tuples become lists when dumped); `parity` only
        once verified, `quantization` and `agreement` only for an int8 artifact, `files` left
        to artifact.write_manifest."""
        data = dataclasses.asdict(self)
        del data["files"]
        for name in ("parity", "quantization", "agreement"):
            if data[name] is None:
                del data[name]
        graph = data["details"]["graph"]
        for name in ("quantized_convolutions", "layernorm_convolutions"):   # a program without them
            if graph.get(name, 0) is None:                                    # stays as it was
                del graph[name]
        if data["details"].get("grouped_conv", 0) is None:   # so does a default program's details
            del data["details"]["grouped_conv"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        """The manifest in `data` (manifest.json without schema and content hash), validated.
        Raises ManifestInvalid naming the first field that is missing, mistyped or out of range."""
        if not isinstance(data, dict):
            raise ManifestInvalid("the manifest is not a JSON object")
        fmt = data.get("format")
        if fmt not in DETAILS:
            raise ManifestInvalid(f"field 'format' is {fmt!r}, not one of {', '.join(DETAILS)}")
        manifest = _parse_dataclass(cls, data, "", {"details": DETAILS[fmt]})
        manifest.check()
        return manifest

    def check(self) -> None:
        """Raise ManifestInvalid for what the field types cannot say."""
        if self.model_file not in self.files:
            raise ManifestInvalid(f"the model file {self.model_file!r} is not among the hashed files")


def schema_refusal(found) -> str | None:
    """None when `found` (a manifest's "schema") is SCHEMA; else the reason it cannot be read,
    saying which version was found, which this sbexport reads, and what to do."""
    if found == SCHEMA:
        return None
    match = re.fullmatch(r"sbexport\.artifact/(\d+)", found) if isinstance(found, str) else None
    if match and int(match[1]) < SCHEMA_VERSION:
        why = "written by an older sbexport: re-export the artifact with this one"
    elif match:
        why = "written by a newer sbexport: re-export the artifact with this one, or upgrade sbexport"
    else:
        why = "not an sbexport artifact manifest: re-export the artifact"
    return f"unknown manifest schema {found!r}; this sbexport reads {SCHEMA!r} only ({why})"


# -- typed parsing -------------------------------------------------------------------------


def parse(tp, value, where: str):
    """`value` (decoded JSON) as type `tp`: a dataclass (from an object, unknown keys refused),
    list/tuple (from an array), dict[str, X] (from an object), int (not bool), float (int too),
    str, bool, a union with None. `where` names the field in errors; raises ManifestInvalid."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp == Range:
        if not (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)
                and 1 <= value[0] <= value[1]):
            raise ManifestInvalid(f"{where} must be [min, max] with 1 <= min <= max, not {value!r}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]   # X | None only
        return parse(inner, value, where)
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, value, where)
    if origin is dict:
        _expect(isinstance(value, dict), where, "a JSON object")
        return {k: parse(args[1], v, f"{where}[{k!r}]") for k, v in value.items()}
    if origin in (list, tuple):
        _expect(isinstance(value, list), where, "a JSON array")
        return origin(parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is int:
        _expect(_is_int(value), where, "an integer")
    elif tp is float:
        _expect(_is_int(value) or isinstance(value, float), where, "a number")
        return float(value)
    elif tp in (str, bool):
        _expect(isinstance(value, tp), where, f"a JSON {'string' if tp is str else 'boolean'}")
    else:
        raise TypeError(f"manifest field {where}: type {tp} has no parser")   # a bug here, not in the file
    return value


def _parse_dataclass(cls, value, where: str, override: dict | None = None):
    """An instance of dataclass `cls` from the JSON object `value`; `override` replaces the
    annotated type of some fields (Manifest.details, picked by format)."""
    _expect(isinstance(value, dict), where or "the manifest", "a JSON object")
    hints = {**typing.get_type_hints(cls), **(override or {})}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ManifestInvalid(f"unknown field {_join(where, unknown[0])!r}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = parse(hints[f.name], value[f.name], _join(where, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ManifestInvalid(f"field {_join(where, f.name)!r} is missing")
    return cls(**kwargs)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(ok: bool, where: str, kind: str) -> None:
    if not ok:
        raise ManifestInvalid(f"field {where!r} is not {kind}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
