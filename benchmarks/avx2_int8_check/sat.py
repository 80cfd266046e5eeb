"""Tiny MatMulInteger and QLinearConv models whose inputs saturate vpmaddubsw (u8 255 x s8 127 pairs)."""
import sys, numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, TensorProto as T, numpy_helper as nh

def flags():
    try:
        f = [l for l in open('/proc/cpuinfo') if l.startswith('flags')][0]
        return {k: k in f.split() for k in ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni')}
    except Exception as e:
        return str(e)

rng = np.random.default_rng(0)
K, N, M = 64, 16, 8
A = rng.integers(240, 256, (M, K)).astype(np.uint8)
B = rng.integers(120, 128, (K, N)).astype(np.int8)
exact = A.astype(np.int64) @ B.astype(np.int64)

g = h.make_graph([h.make_node('MatMulInteger', ['A', 'B'], ['Y'])], 'mmi',
                 [h.make_tensor_value_info('A', T.UINT8, [M, K])], [h.make_tensor_value_info('Y', T.INT32, [M, N])],
                 [nh.from_array(B, 'B')])
m = h.make_model(g, opset_imports=[h.make_opsetid('', 13)]); m.ir_version = 8
s = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])
y = s.run(None, {'A': A})[0]
print('cpu', flags())
print('MatMulInteger: exact', exact[0, :3], 'got', y[0, :3], 'max |diff|', np.abs(y - exact).max())

# QLinearConv 1x1, per-channel s8 weights, u8 activation, out scale chosen so result fits in u8
X = A.T.reshape(1, K, M, 1).copy()           # [1, C=K, H=M, W=1]
W = B.T.reshape(N, K, 1, 1).copy()           # [N, K, 1, 1]
ysc = float(exact.max()) / 250.0
nodes = [h.make_node('QLinearConv', ['X', 'xs', 'xz', 'W', 'ws', 'wz', 'ys', 'yz'], ['Y'])]
inits = [nh.from_array(np.array(1.0, np.float32), 'xs'), nh.from_array(np.array(0, np.uint8), 'xz'),
         nh.from_array(W, 'W'), nh.from_array(np.ones(N, np.float32), 'ws'), nh.from_array(np.zeros(N, np.int8), 'wz'),
         nh.from_array(np.array(ysc, np.float32), 'ys'), nh.from_array(np.array(0, np.uint8), 'yz')]
g = h.make_graph(nodes, 'qlc', [h.make_tensor_value_info('X', T.UINT8, [1, K, M, 1])],
                 [h.make_tensor_value_info('Y', T.UINT8, [1, N, M, 1])], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid('', 13)]); m.ir_version = 8
s = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])
y = s.run(None, {'X': X})[0].reshape(N, M).T.astype(np.int64)
want = np.clip(np.rint(exact / ysc), 0, 255)
print('QLinearConv: exact', want[0, :3], 'got', y[0, :3], 'max |diff| (u8 steps)', np.abs(y - want).max())
