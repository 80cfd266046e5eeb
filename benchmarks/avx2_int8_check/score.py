"""Agreement figures as the guard computes them (sbexport.agreement.decisions) for saved outputs vs fp32 refs."""
import sys, numpy as np
from sbexport.agreement import Group, Measure, decisions, _fold_error, OutputError
from sbexport.tasks import TASKS
from sbexport.verify import real_positions
D = "/work/wt/avx2check/out"
def score(tname, f):
    task = TASKS[tname]; z = np.load(f"{D}/{tname}/inputs.npz"); ref = np.load(f"{D}/{tname}/ref.npz"); got = np.load(f)
    n = len({k.split(":")[0] for k in z.files}); ms = {}; err = {}
    for i in range(n):
        e = {k: ref[f"{i}:{k}"] for k in task.outputs}; g = {k: got[f"{i}:{k}"] for k in task.outputs}
        mask = z[f"{i}:attention_mask"]
        for name in task.outputs:
            _fold_error(err.setdefault(name, OutputError()), e[name], g[name], real_positions(task, name, mask, e[name].shape))
        for key, agree, cos, pairs in decisions(task, e, g, mask):
            m = ms.setdefault(key, Measure(judged=not key.endswith("(shown)")))
            m.agree += int(np.sum(agree)); m.total += int(np.size(agree))
            if cos is not None and cos.size: m.min_cosine = min(float(cos.min()), 1.0 if m.min_cosine is None else m.min_cosine)
    lo = min(m.rate for m in ms.values() if m.judged)
    parts = "; ".join(f"{k} {m.agree}/{m.total} {m.rate:.2%}" + (f" mincos {m.min_cosine:.4f}" if m.min_cosine is not None else "") for k, m in ms.items())
    errs = "; ".join(f"{k} max {e.max_abs:.3g} mean {e.mean_abs:.3g}" for k, e in err.items())
    return f"{f.split('/')[-2]:8} {f.split('/')[-1]:22} judged-min {lo:.2%} {'PASS' if lo >= 0.99 else 'FAIL'} | {parts} | {errs}"
for f in sys.argv[1:]:
    print(score(f.split("/")[-2], f))
