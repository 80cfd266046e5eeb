"""sbexport: SqueezeBERT for phones. A reference PyTorch model and tokenizer, exporters to ONNX
and ExecuTorch that keep every grouped 1x1 convolution a native conv op, parity checks, and
benchmarks against BERT-base."""

__version__ = "0.1.0"
