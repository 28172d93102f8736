"""Feature caching throughput: images/s and texts/s of the frozen CLIP encoders.

Feature caching runs every frozen encoder once over the dataset (``mmmixlab.clip.
compute_features``); its cost is ``FrozenCLIP.encode_images`` (uint8 images in, unit vectors
out, preprocessing included) and ``FrozenCLIP.encode_texts`` (tokenizer included). Measured
for

* the tiny CLIP of the embedded world (``mmmixlab.clip._tiny_model``, 64 x 64 renders) on CPU;
* an open_clip ``ViT-B-32`` with random weights (same cost as the trained one) on CPU, and on
  the GPU when one is used; its images go through open_clip's own PIL preprocessing (resize,
  centre crop, normalize), timed alone too (``preprocess``), since on a GPU it is the part
  left on the CPU.

All variants alternate within each round. Rates are items / median seconds.

    python -m benchmarks.feature_caching [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import os

import numpy as np
import torch

from mmmixlab.clip import FrozenCLIP, _tiny_model
from mmmixlab.config import ClipConfig

from .common import interleaved, log, standalone, table

COLOURS = ("red", "blue", "green", "wooden", "metal", "white", "black", "glossy")
THINGS = ("chair", "table", "lamp", "vase", "cup", "bookshelf", "sofa", "plant", "desk", "bed")
PARTS = ("four legs", "a round base", "two shelves", "a tall back", "thin arms", "a wide top")


def captions(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [f"a {rng.choice(COLOURS)} {rng.choice(THINGS)} with {rng.choice(PARTS)}"
            for _ in range(n)]


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def tiny_clip(device) -> FrozenCLIP:
    model, tokenizer = _tiny_model(ClipConfig(), image_size=64)
    return FrozenCLIP(model, tokenizer, key="bench-tiny", image_size=64, device=device)


def vit_b32(device) -> FrozenCLIP:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to download
    import open_clip
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    return FrozenCLIP(model, tokenizer, key="bench-vit-b-32", preprocess=preprocess,
                      device=device)


def _cases(clip: FrozenCLIP, n_img: int, img_size: int, n_txt: int, prefix: str,
           with_preprocess: bool) -> tuple[dict, dict]:
    ims, txts = images(n_img, img_size), captions(n_txt)
    fns = {f"{prefix}_images": lambda: clip.encode_images(ims),
           f"{prefix}_texts": lambda: clip.encode_texts(txts)}
    counts = {f"{prefix}_images": n_img, f"{prefix}_texts": n_txt}
    if with_preprocess:
        fns[f"{prefix}_preprocess"] = lambda: clip._image_batch(ims)
        counts[f"{prefix}_preprocess"] = n_img
    return fns, counts


def run(device: torch.device | None = None, quick: bool = False) -> dict:
    device = device if device is not None else torch.device("cpu")
    cpu = torch.device("cpu")
    fns, counts, meta = {}, {}, {}
    log("[features] building the tiny CLIP and a random ViT-B-32 ...")
    tiny = tiny_clip(cpu)
    f, c = _cases(tiny, 256, 64, 512, "tiny_cpu", False)
    fns.update(f)
    counts.update(c)
    meta["tiny_cpu"] = {"model": "tiny CLIP (width 64, 2 layers, 64 px)", "device": "cpu",
                        "image_size": 64, "params": sum(p.numel() for p in tiny.model.parameters())}
    vit = vit_b32(cpu)
    n_img = 16 if quick else 32
    f, c = _cases(vit, n_img, 224, 32 if quick else 64, "vitb32_cpu", True)
    fns.update(f)
    counts.update(c)
    meta["vitb32_cpu"] = {"model": "open_clip ViT-B-32, random weights", "device": "cpu",
                          "image_size": 224,
                          "params": sum(p.numel() for p in vit.model.parameters())}
    if device.type == "cuda":
        vit_gpu = vit_b32(device)
        f, c = _cases(vit_gpu, 512, 224, 1024, "vitb32_cuda", False)
        fns.update(f)
        counts.update(c)
        meta["vitb32_cuda"] = {"model": "open_clip ViT-B-32, random weights, fp32",
                               "device": torch.cuda.get_device_name(device), "image_size": 224}
    log("[features] timing ...")
    t = interleaved(fns, rounds=3 if quick else 7, warmup=1, min_rounds=2,
                    budget_s=25 if quick else 60, device=device)
    rates = {k: {"items": counts[k], "per_s": round(counts[k] / v.median, 2),
                 "seconds": v.summary(scale=1.0)} for k, v in t.items()}
    res = {"rates": rates, "models": meta,
           "tiny_images_per_s": rates["tiny_cpu_images"]["per_s"],
           "tiny_texts_per_s": rates["tiny_cpu_texts"]["per_s"],
           "vitb32_cpu_images_per_s": rates["vitb32_cpu_images"]["per_s"],
           "vitb32_cpu_texts_per_s": rates["vitb32_cpu_texts"]["per_s"]}
    if device.type == "cuda":
        res["vitb32_cuda_images_per_s"] = rates["vitb32_cuda_images"]["per_s"]
        res["vitb32_cuda_texts_per_s"] = rates["vitb32_cuda_texts"]["per_s"]
    else:
        res["vitb32_cuda"] = "not measured (no GPU in this run)"
    return res


def report(res: dict) -> str:
    rows = [[k, v["items"], v["seconds"]["median"], v["per_s"], v["seconds"]["rounds"]]
            for k, v in res["rates"].items()]
    out = ["Feature caching: items per second (images uint8 -> unit features, texts -> unit "
           "features)", table(rows, ["case", "items", "s median", "items/s", "rounds"])]
    if "vitb32_cuda" in res:
        out.append(f"CUDA: {res['vitb32_cuda']}")
    return "\n".join(out)


if __name__ == "__main__":
    standalone("feature_caching", run, report)
