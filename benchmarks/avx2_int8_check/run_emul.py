"""Run an int8 .onnx on saved guard inputs (meant for qemu-x86_64 -cpu Haswell): argv model.onnx inputs.npz out.npz."""
import sys, time, numpy as np, onnxruntime as ort
model, inputs, out = sys.argv[1:4]
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]; outs = [x.name for x in s.get_outputs()]
z = np.load(inputs); n = len({k.split(":")[0] for k in z.files})
res = {}; t = time.time()
for i in range(n):
    for name, v in zip(outs, s.run(None, {k: z[f"{i}:{k}"] for k in names})):
        res[f"{i}:{name}"] = v
np.savez(out, **res); print(model, n, "cases", f"{time.time() - t:.0f}s", flush=True)
