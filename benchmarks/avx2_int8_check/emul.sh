# usage: sh emul.sh variant...  (features and mnli of each under qemu -cpu Haswell)
for v in "$@"; do for t in features mnli; do
  qemu-x86_64 -cpu Haswell /work/main/.venv/bin/python run_emul.py out/$t/$v.onnx out/$t/inputs.npz out/$t/$v.haswell.npz 2>&1 | grep -v "TCG doesn"
done; done
