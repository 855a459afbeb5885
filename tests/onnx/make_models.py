"""Writes the small real models the ONNX tests run (committed beside this script, so CI needs
neither torch nor transformers nor onnxruntime):

    python -m tests.onnx.make_models [NAME...]   # needs torch, transformers, onnxruntime

Each is a `transformers` model built from a tiny config with random weights (nothing from a hub),
exported by torch.onnx (TorchScript exporter, opset 17), plus `<name>.npz` holding the inputs of
two calls and ONNX Runtime's outputs for them (`in0_<input>`, `out0_<output>`...): the tests
compare fibergrid against those.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "models"


def main(names: list[str]) -> None:
    """Writes the models named (all when none are)."""
    import onnxruntime as ort
    import torch
    import transformers

    from bench.onnx_models import _export, _realistic

    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    def tokens(batch: int, seq: int) -> dict[str, np.ndarray]:
        mask = np.ones((batch, seq), np.int64)
        mask[0, seq - 2:] = 0
        return {"input_ids": rng.integers(0, 100, (batch, seq)).astype(np.int64), "attention_mask": mask}

    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    specs = {
        "bert_tiny": (lambda: transformers.BertModel(transformers.BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)), (torch.zeros(1, 4, dtype=torch.int64), torch.ones(1, 4, dtype=torch.int64)),
            ["input_ids", "attention_mask"], ["last_hidden_state", "pooler_output"], dyn,
            [tokens(1, 7), tokens(3, 5)]),
        "gpt2_tiny": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64, use_cache=False, bos_token_id=0, eos_token_id=0)),
            (torch.zeros(1, 4, dtype=torch.int64), torch.ones(1, 4, dtype=torch.int64)),
            ["input_ids", "attention_mask"], ["logits"], dyn, [tokens(1, 6), tokens(2, 9)]),
        "resnet_tiny": (lambda: _realistic(transformers.ResNetForImageClassification(transformers.ResNetConfig(
            num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=5))),
            (torch.zeros(1, 3, 32, 32),), ["pixel_values"], ["logits"], {"pixel_values": {0: "batch"}},
            [{"pixel_values": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)},
             {"pixel_values": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}]),
        "vit_tiny": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
            image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_labels=5)), (torch.zeros(1, 3, 16, 16),), ["pixel_values"], ["logits"],
            {"pixel_values": {0: "batch"}},
            [{"pixel_values": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)},
             {"pixel_values": rng.standard_normal((3, 3, 16, 16)).astype(np.float32)}]),
    }
    HERE.mkdir(exist_ok=True)
    for name, (build, args, ins, outs, dynamic, calls) in specs.items():
        if names and name not in names:
            continue
        path = _export(name, build(), args, ins, outs, dynamic)
        target = HERE / f"{name}.onnx"
        target.write_bytes(path.read_bytes())
        path.unlink()
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        arrays = {}
        for k, feeds in enumerate(calls):
            for key, value in feeds.items():
                arrays[f"in{k}_{key}"] = value
            for key, value in zip(outs, session.run(None, feeds)):
                arrays[f"out{k}_{key}"] = value
        np.savez(HERE / f"{name}.npz", **arrays)
        print(target, target.stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
