"""ONNX models from `transformers` (exported by torch.onnx) on fibergrid next to ONNX Runtime.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.onnx_models --json

Each model is built from a small config class with random weights (nothing is fetched from a
hub), exported with torch.onnx's TorchScript exporter (opset 17) into a cache folder, loaded with
`fg.load(path)` on local-task and with an ONNX Runtime CPU session (`intra_op_num_threads` = the
worker count) and checked against ONNX Runtime (max abs error <= 1e-4 x max(1, max |ref|)). Then
both are timed in interleaved rounds, each runtime's timed calls after 0.1 s of untimed ones
(bench.timing.medians_us: ONNX Runtime's worker spins on for 40-50 ms after a call, holding a
core that fibergrid's next calls would miss): median microseconds per call,
numpy in and out, and `ratio_vs_ort` = fibergrid / ONNX Runtime (below 1: fibergrid is faster).

Cases: a BERT encoder (dynamic batch and sequence; run at batch 1 and 4), a GPT-2 decoder (LM
head; dynamic sequence), ResNet and MobileNetV2 (CNNs) and a ViT. Needs torch, transformers and
onnxruntime (`pip install 'fibergrid[onnx]' torch==2.13.0 transformers`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

import fibergrid as fg
from bench.timing import medians_us

TOLERANCE = 1e-4


def model_dir() -> Path:
    """Where exported models are kept between runs (under the compile cache's folder)."""
    from compiler.cache import cache_dir
    return cache_dir() / "onnx-models"


def _export(name: str, model: Any, args: tuple, in_names: list[str], out_names: list[str],
            dynamic: dict[str, dict[int, str]]) -> Path:
    """torch.onnx export of `model` called with keyword inputs, returning `out_names` (cached)."""
    import torch
    path = model_dir() / f"{name}.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)

    class Wrapped(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            out = self.inner(**dict(zip(in_names, xs)))
            return tuple(getattr(out, k) for k in out_names)

    tmp = path.with_suffix(".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapped(model.eval()), args, str(tmp), input_names=in_names, output_names=out_names,
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    os.replace(tmp, path)
    return path


def _realistic(model: Any) -> Any:
    """Gives a CNN's convolutions and batch norms trained-looking weights and statistics: some
    config classes' default init makes activations vanish (MobileNetV2's logits come out ~1e-23),
    which would make the comparison with ONNX Runtime meaningless."""
    import torch
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 1 / m.in_features ** 0.5)
    return model


def models() -> dict[str, tuple[Callable[[], Path], dict[str, np.ndarray]]]:
    """name -> (export function, inputs)."""
    import torch
    import transformers
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    def tokens(batch: int, seq: int) -> dict[str, np.ndarray]:
        mask = np.ones((batch, seq), np.int64)
        mask[0, seq - seq // 4:] = 0  # padding in the first row: the mask matters
        return {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64), "attention_mask": mask}

    def bert() -> Path:
        cfg = transformers.BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=1024, max_position_embeddings=256)
        return _export("bert", transformers.BertModel(cfg), (torch.zeros(1, 8, dtype=torch.int64), torch.ones(1, 8, dtype=torch.int64)),
                       ["input_ids", "attention_mask"], ["last_hidden_state", "pooler_output"],
                       {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}})

    def gpt2() -> Path:
        cfg = transformers.GPT2Config(vocab_size=1000, n_embd=256, n_layer=4, n_head=4, n_positions=256, use_cache=False,
                                      bos_token_id=0, eos_token_id=0)
        return _export("gpt2", transformers.GPT2LMHeadModel(cfg), (torch.zeros(1, 8, dtype=torch.int64), torch.ones(1, 8, dtype=torch.int64)),
                       ["input_ids", "attention_mask"], ["logits"],
                       {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}})

    def resnet() -> Path:
        cfg = transformers.ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                                        layer_type="basic", num_labels=100)
        return _export("resnet", _realistic(transformers.ResNetForImageClassification(cfg)), (torch.zeros(1, 3, 96, 96),),
                       ["pixel_values"], ["logits"], {})

    def mobilenet() -> Path:
        cfg = transformers.MobileNetV2Config(num_channels=3, image_size=96, depth_multiplier=0.5, num_labels=100)
        return _export("mobilenet", _realistic(transformers.MobileNetV2ForImageClassification(cfg)), (torch.zeros(1, 3, 96, 96),), ["pixel_values"], ["logits"], {})

    def vit() -> Path:
        cfg = transformers.ViTConfig(image_size=64, patch_size=8, num_channels=3, hidden_size=192, num_hidden_layers=4,
                                     num_attention_heads=4, intermediate_size=768, num_labels=100)
        return _export("vit", transformers.ViTForImageClassification(cfg), (torch.zeros(1, 3, 64, 64),),
                       ["pixel_values"], ["logits"], {})

    image = {"pixel_values": rng.standard_normal((1, 3, 96, 96)).astype(np.float32)}
    return {
        "bert_b1_s32": (bert, tokens(1, 32)),
        "bert_b4_s32": (bert, tokens(4, 32)),
        "gpt2_s32": (gpt2, tokens(1, 32)),
        "resnet_96": (resnet, image),
        "mobilenetv2_96": (mobilenet, image),
        "vit_64": (vit, {"pixel_values": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}),
    }


def check(results: dict[str, np.ndarray], reference: list[np.ndarray]) -> float:
    """Max abs error over the outputs, as a fraction of the bar 1e-4 x max(1, max |ref|) (<= 1 passes)."""
    worst = 0.0
    for got, ref in zip(results.values(), reference):
        if got.shape != ref.shape:
            return float("inf")
        bar = TOLERANCE * max(1.0, float(np.abs(ref).max()))
        worst = max(worst, float(np.abs(got.astype(np.float64) - ref).max()) / bar)
    return worst


def run(repeats: int, workers: int, names: list[str] | None = None) -> dict[str, Any]:
    import onnxruntime as ort
    device = fg.create_device("local-task", workers=workers)
    out: dict[str, Any] = {"workers": workers, "device": "local-task", "onnxruntime": ort.__version__, "cases": {}}
    for name, (export, feeds) in models().items():
        if names and name not in names:
            continue
        case: dict[str, Any] = {}
        try:
            path = export()
            options = ort.SessionOptions()
            options.intra_op_num_threads = workers
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            reference = session.run(None, feeds)
            module = fg.load(path, device)
            got = module.named(**feeds)
            case["error_vs_bar"] = round(check(got, reference), 4)
            case["matches_ort"] = case["error_vs_bar"] <= 1.0
            case["max_abs_ref"] = round(max(float(np.abs(r).max()) for r in reference), 4)
            times = medians_us({"fibergrid": lambda: module(**feeds), "onnxruntime": lambda: session.run(None, feeds)}, repeats)
            case["fibergrid_us"] = round(times["fibergrid"], 1)
            case["onnxruntime_us"] = round(times["onnxruntime"], 1)
            case["ratio_vs_ort"] = round(times["fibergrid"] / times["onnxruntime"], 3)
        except fg.Error as e:
            case["error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        out["cases"][name] = case
        print(f"{name}: {case}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default is a table)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per side, at least (default 30)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="fibergrid workers = ORT threads")
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.workers, args.case)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'case':18} {'fibergrid us':>13} {'ORT us':>10} {'ratio':>7}  matches ORT")
    for name, c in result["cases"].items():
        if "error" in c:
            print(f"{name:18} {c['error']}")
        else:
            print(f"{name:18} {c['fibergrid_us']:13.1f} {c['onnxruntime_us']:10.1f} {c['ratio_vs_ort']:7.3f}  "
                  f"{c['matches_ort']} ({c['error_vs_bar']} of the bar)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
