"""Real models: tiny `transformers` models exported by torch.onnx (tests/onnx/make_models.py
wrote them and ONNX Runtime's outputs), run by fibergrid at two input-shape signatures each
(dynamic batch and sequence) and compared with the bar of issue 10: max abs error <= 1e-4 x
max(1, max |ref|)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fibergrid as fg

pytest.importorskip("onnx")

MODELS = Path(__file__).parent / "models"


@pytest.mark.parametrize("name", ["bert_tiny", "gpt2_tiny", "resnet_tiny", "vit_tiny"])
@pytest.mark.parametrize("driver", ["local-sync", "local-task"])
def test_matches_onnxruntime(name, driver):
    module = fg.load(MODELS / f"{name}.onnx", driver)
    data = np.load(MODELS / f"{name}.npz")
    calls = sorted({key.split("_", 1)[0][2:] for key in data.files if key.startswith("in")})
    assert len(calls) == 2
    for k in calls:
        feeds = {key.split("_", 1)[1]: data[key] for key in data.files if key.startswith(f"in{k}_")}
        got = module.named(**feeds)
        for out in module.outputs:
            ref = data[f"out{k}_{out.name}"]
            assert got[out.name].shape == ref.shape
            err = float(np.abs(got[out.name].astype(np.float64) - ref).max())
            assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), (name, out.name, err)


@pytest.mark.parametrize("driver", ["local-sync", "local-task"])
def test_vit_specialized_matches_onnxruntime(driver):
    """The ViT's dynamic batch compiles once for every size, without attention fusion; a shape
    that recurs gets code of its own (specialize_after), where the patch embedding is a matmul,
    the heads are read in place by the fused attention and the GELU joins its matmul."""
    module = fg.load(MODELS / "vit_tiny.onnx", driver, specialize_after=1)
    data = np.load(MODELS / "vit_tiny.npz")
    feeds, ref = {"pixel_values": data["in1_pixel_values"]}, data["out1_logits"]
    for _ in range(3):  # the code for every size, then the specialized code
        got = module.named(**feeds)["logits"]
        assert float(np.abs(got.astype(np.float64) - ref).max()) <= 1e-4 * max(1.0, float(np.abs(ref).max()))
