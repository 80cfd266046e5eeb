"""Run an .onnx file in ONNX Runtime, case after case: the arm64 side of `verify --target arm64-qemu`.

Runs inside the arm64 Python under qemu-aarch64 (sbexport/targets/arm64.py starts it), so it
imports nothing of sbexport and nothing but numpy and onnxruntime from SITE:

    python3.11 -I arm64_ort.py SITE MODEL THREADS

It prints one JSON line when the session is ready ({"ready": true, "arch", "onnxruntime"}), then
reads case folders from stdin, one per line: each holds INPUT.npy for every input of the model;
it writes out/output_<i>.npy (the outputs in the model's order) and answers one JSON line,
{"outputs": N} or {"error": "..."}. An empty line or the end of stdin ends it.
"""

import json
import os
import platform
import sys


def answer(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def run_case(session, np, folder: str) -> dict:
    """Run the inputs in `folder` and write the outputs beside them; the answer to send."""
    try:
        feeds = {i.name: np.load(os.path.join(folder, i.name + ".npy")) for i in session.get_inputs()}
        outputs = session.run(None, feeds)
        os.makedirs(os.path.join(folder, "out"), exist_ok=True)
        for index, value in enumerate(outputs):
            np.save(os.path.join(folder, "out", f"output_{index}.npy"), value)
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are untyped; sent back as one line
        lines = str(e).strip().splitlines()
        return {"error": (lines[0] if lines else type(e).__name__)[:300]}
    return {"outputs": len(outputs)}


def main() -> None:
    site, model, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, site)
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - reported as one line, like a failed case
        answer({"error": f"not a loadable ONNX model ({str(e).strip().splitlines()[0][:300]})"})
        return
    answer({"ready": True, "arch": platform.machine(), "onnxruntime": ort.__version__})
    for line in sys.stdin:
        if not line.strip():
            break
        answer(run_case(session, np, line.strip()))


if __name__ == "__main__":
    main()
