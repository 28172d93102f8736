"""The frozen image/text FM-encoders and their cached features.

Two sources, one interface (:class:`FrozenCLIP`):

* ``synth-tiny``: a tiny open_clip model pre-trained on the SynthShapes renders and captions.
  Random CLIP weights give nearly collinear text features, so a frozen *random* encoder would
  teach the 3D encoder nothing; a minute of contrastive pre-training gives features with real
  class structure. Trained once per world and cached.
* any open_clip model name with a pretrained tag or a local checkpoint path, e.g.
  ``ViT-B-32/openai`` or ``ViT-bigG-14/laion2b_s39b_b160k`` (OpenShape's features). The image
  preprocessing is the one open_clip pairs with those weights.

Features are L2-normalized (CLIP compares them as unit vectors) and cached per (dataset,
encoder) key, as the paper does: the frozen encoders run once, never inside the training loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import ClipConfig
from .fileio import atomic_path
from .progress import bar as tqdm

TINY_CONTEXT = 32
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def resolve_cache_dir(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$MMMIXLAB_CACHE``, else ``~/.cache/mmmixlab``."""
    path = cache_dir or os.environ.get("MMMIXLAB_CACHE") or Path.home() / ".cache" / "mmmixlab"
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def images_to_tensor(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> CLIP-normalized float (N, 3, S, S); the tiny encoder's preprocess."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                          align_corners=False)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class FrozenCLIP:
    """A frozen open_clip model with the preprocessing and tokenizer that belong to it."""

    def __init__(self, model, tokenizer, key: str, preprocess=None, image_size: int = 224,
                 device="cpu"):
        self.model = model.eval().requires_grad_(False).to(device)
        self.tokenizer = tokenizer
        self.key = key
        self.preprocess = preprocess
        self.image_size = image_size
        self.device = torch.device(device)

    @property
    def embed_dim(self) -> int:
        if getattr(self, "_embed_dim", None) is None:
            self._embed_dim = int(self.encode_texts(["a"]).shape[-1])
        return self._embed_dim

    def _image_batch(self, images: np.ndarray) -> torch.Tensor:
        if self.preprocess is not None:
            from PIL import Image
            return torch.stack([self.preprocess(Image.fromarray(np.asarray(im))) for im in images])
        return images_to_tensor(images, self.image_size)

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, batch_size: int = 256,
                      progress: bool = False) -> torch.Tensor:
        """uint8 images (N, H, W, 3) -> unit feature vectors (N, D) on the CPU."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 of shape (N, H, W, 3), got "
                             f"{images.dtype} {images.shape}")
        out = []
        for s in tqdm(range(0, len(images), batch_size), disable=not progress, desc="images"):
            x = self._image_batch(images[s:s + batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256,
                     progress: bool = False) -> torch.Tensor:
        """Strings -> unit feature vectors (N, D) on the CPU."""
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings")
        out = []
        for s in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="texts"):
            tokens = self.tokenizer(texts[s:s + batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)

    def class_features(self, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """ULIP-style category features: mean of the unit text features of every template,
        renormalized. (C, D)."""
        prompts = [t.format(name) for name in class_names for t in templates]
        feats = self.encode_texts(prompts).view(len(class_names), len(templates), -1)
        return F.normalize(feats.mean(1), dim=-1)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def _tiny_model(cfg: ClipConfig, image_size: int):
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=2, width=cfg.tiny_width, head_width=32, patch_size=8,
                           image_size=image_size)
    text = CLIPTextCfg(context_length=TINY_CONTEXT, width=cfg.tiny_width, heads=4, layers=2)
    model = CLIP(embed_dim=cfg.tiny_embed_dim, vision_cfg=vision, text_cfg=text)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONTEXT)
    return model, tokenizer


def _tiny_key(cfg: ClipConfig, world_key: str) -> str:
    fields = {k: v for k, v in asdict(cfg).items() if k.startswith("tiny_")}
    digest = hashlib.sha1(json.dumps([fields, world_key], sort_keys=True).encode()).hexdigest()
    return f"synth-tiny-{digest[:10]}"


class _UsedTokenRows:
    """The text tower trains only the token-embedding rows its training texts use.

    Why: the tokenizer's vocabulary has 49,408 rows and the tiny world's texts use a few
    hundred. A row no text uses gets a zero gradient every step, so AdamW leaves its moments at
    exactly zero and changes it by weight decay alone; yet the optimizer still reads and writes
    all 3.2M values, and ``sqrt`` over the all-zero second moment is a slow path on x86 (7 ms
    against 0.9 ms for positive values of the same size here). So the model trains on an
    embedding of the used rows (the token ids remapped in order, which keeps the EOT token the
    largest id and so the argmax pooling where it was), and :meth:`restore` applies to the
    full table the per-step decays ``1 - lr * wd`` it recorded, one multiply each, as AdamW
    would have, and writes the trained rows back: the same weights bit for bit
    (``tests/test_clip.py``).
    """

    def __init__(self, model, tokens: list):
        self.model = model
        self.full = model.token_embedding
        self.used = torch.unique(torch.cat([t.reshape(-1) for t in tokens]))  # sorted
        remap = torch.full((self.full.num_embeddings,), -1, dtype=torch.long)
        remap[self.used] = torch.arange(len(self.used))
        self.remapped = [remap[t] for t in tokens]
        rows = self.full.weight.detach()[self.used].clone()
        # _weight: the rows as they are, no initialization draw from the global RNG
        model.token_embedding = torch.nn.Embedding(len(self.used), rows.shape[1], _weight=rows)
        self.decays: list = []

    @staticmethod
    def applies(model) -> bool:
        """Only where the pooling reads the token ids by order (argmax, open_clip's default)."""
        return getattr(model, "text_pool_type", "argmax") == "argmax" and isinstance(
            getattr(model, "token_embedding", None), torch.nn.Embedding)

    def decay_unused(self, lr: float, weight_decay: float) -> None:
        """Record one AdamW step's decoupled weight decay (call before ``opt.step()``)."""
        self.decays.append(1 - lr * weight_decay)

    def restore(self) -> None:
        """The full embedding back in the model: every row decayed step by step, then the
        trained rows written over theirs."""
        weight = self.full.weight
        with torch.no_grad():
            for d in self.decays:
                torch._foreach_mul_([weight], d)  # AdamW's foreach decay, the same rounding
            weight[self.used] = self.model.token_embedding.weight.detach()
        self.model.token_embedding = self.full


def pretrain_tiny_clip(train_set, cfg: ClipConfig, seed: int = 0, device="cpu",
                       progress: bool = True, used_token_rows: bool = True):
    """Contrastive pre-training of a tiny CLIP on (render, caption) pairs of ``train_set``.

    Each step draws a batch of shapes, one random view and one random caption per shape, and
    minimizes CLIP's symmetric InfoNCE. Returns (model, tokenizer). ``used_token_rows``:
    train only the embedding rows the texts use (:class:`_UsedTokenRows`; the same weights,
    less optimizer work); False trains the whole table (the reference the tests compare to).
    """
    from .losses import symmetric_info_nce

    images = np.asarray(train_set.images)
    torch.manual_seed(seed)  # before the model: its initialization draws from the global RNG
    model, tokenizer = _tiny_model(cfg, image_size=images.shape[-2])
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    texts = [list(caps) for caps in train_set.captions]
    if cfg.tiny_prompt_share > 0 and train_set.class_names:
        # Category prompts are descriptions of the shape too; mixing them into the text pool
        # gives the category text features (zero-shot classifiers) the structure of the data.
        from .data import PROMPT_TEMPLATES, display_name
        prompts = [[t.format(display_name(c)) for t in PROMPT_TEMPLATES]
                   for c in train_set.class_names]
        labels = np.asarray(train_set.labels)
        n_prompt = [max(1, round(len(c) * cfg.tiny_prompt_share / (1 - cfg.tiny_prompt_share)))
                    if labels[i] >= 0 else 0 for i, c in enumerate(texts)]
        rng = np.random.default_rng(seed)
        for i, k in enumerate(n_prompt):
            if k:
                texts[i] += list(rng.choice(prompts[labels[i]], size=k, replace=False))
    tokens = [tokenizer(t) for t in texts]
    weight_decay = 0.1
    rows = _UsedTokenRows(model, tokens) if used_token_rows and _UsedTokenRows.applies(model) \
        else None
    if rows is not None:
        tokens = rows.remapped
        model.token_embedding.to(device)
    # foreach: bit for bit the per-tensor loop's updates, fewer kernel calls
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.tiny_lr, weight_decay=weight_decay,
                            foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / cfg.tiny_steps)))
    n = len(train_set)
    bar = tqdm(range(cfg.tiny_steps), disable=not progress, desc="pre-train tiny CLIP")
    for _ in bar:
        idx = torch.randint(n, (min(cfg.tiny_batch_size, n),), generator=gen)
        views = torch.randint(images.shape[1], (len(idx),), generator=gen)
        img = images_to_tensor(images[idx.numpy(), views.numpy()], images.shape[-2]).to(device)
        txt = torch.stack([tokens[i][torch.randint(len(tokens[i]), (1,), generator=gen)][0]
                           for i in idx.tolist()]).to(device)
        f_img = model.encode_image(img)
        f_txt = model.encode_text(txt)
        loss = symmetric_info_nce(f_img, f_txt, model.logit_scale.exp().clamp(max=100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if rows is not None:
            rows.decay_unused(opt.param_groups[0]["lr"], weight_decay)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    if rows is not None:
        rows.restore()
    return model.eval(), tokenizer


def load_frozen_clip(cfg: ClipConfig, device="cpu", cache_dir=None, train_set=None,
                     world_key: str | None = None, seed: int = 0,
                     progress: bool = True) -> FrozenCLIP:
    """The frozen FM-encoders named by ``cfg``.

    ``synth-tiny`` needs ``train_set`` (SynthShapes train triplets) and ``world_key`` the first
    time; the trained weights are cached under ``cache_dir/clip/`` and reused afterwards.
    """
    if cfg.model == "synth-tiny":
        if world_key is None:
            raise ValueError("the synth-tiny encoder needs world_key (the SynthShapes config key)")
        key = _tiny_key(cfg, world_key)
        path = resolve_cache_dir(cache_dir) / "clip" / f"{key}.pt"
        image_size = None if train_set is None else int(np.asarray(train_set.images).shape[-2])
        if path.exists():
            state = _load_torch(path)
            model, tokenizer = _tiny_model(cfg, image_size=state["image_size"])
            model.load_state_dict(state["model"])
        else:
            if train_set is None:
                raise FileNotFoundError(f"no cached tiny CLIP at {path}, and no training set "
                                        "was given to pre-train one")
            model, tokenizer = pretrain_tiny_clip(train_set, cfg, seed=seed, device=device,
                                                  progress=progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_atomic({"model": model.state_dict(), "image_size": image_size}, path)
            state = {"image_size": image_size}
        return FrozenCLIP(model, tokenizer, key=key, image_size=state["image_size"],
                          device=device)
    return _load_open_clip(cfg, device)


def _load_open_clip(cfg: ClipConfig, device) -> FrozenCLIP:
    import open_clip

    if cfg.model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {cfg.model!r}; see open_clip.list_models()")
    pretrained = cfg.pretrained
    if pretrained and os.path.sep in pretrained or (pretrained and pretrained.endswith(
            (".pt", ".bin", ".safetensors"))):
        if not os.path.exists(pretrained):
            raise FileNotFoundError(f"CLIP checkpoint not found: {pretrained}")
        key_src = f"{cfg.model}:{_file_digest(pretrained)}"
    else:
        key_src = f"{cfg.model}:{pretrained}"
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            cfg.model, pretrained=pretrained, device=device)
    except Exception as err:  # network errors come in many types; all mean the same here
        raise RuntimeError(
            f"could not load open_clip model {cfg.model!r} with pretrained={pretrained!r}: "
            f"{err}\nIf this machine is offline, fetch the weights on a connected one with\n"
            f"  python -c \"import open_clip; open_clip.create_model_and_transforms("
            f"'{cfg.model}', pretrained='{pretrained}')\"\nand copy the Hugging Face cache "
            f"(~/.cache/huggingface) here, or pass a local checkpoint path as pretrained."
        ) from err
    tokenizer = open_clip.get_tokenizer(cfg.model)
    key = "openclip-" + hashlib.sha1(key_src.encode()).hexdigest()[:10]
    return FrozenCLIP(model, tokenizer, key=key, preprocess=preprocess, device=device)


def _file_digest(path: str, chunk: int = 1 << 20) -> str:
    """Size plus a hash of the first and last MiB: cheap, and changes when the file does."""
    h = hashlib.sha1(str(os.path.getsize(path)).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        f.seek(max(0, os.path.getsize(path) - chunk))
        h.update(f.read(chunk))
    return h.hexdigest()[:16]


def _save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load_torch(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # never runs code
    except Exception as err:
        raise ValueError(f"corrupt or unreadable cache file {path}: {err}; delete it to rebuild"
                         ) from err


# ---------------------------------------------------------------------------------------------
# Cached triplet features
# ---------------------------------------------------------------------------------------------

@dataclass
class TripletFeatures:
    """Frozen features of a triplet set.

    image: (S, K, D) one unit vector per rendered view.
    text:  (S, C, D) one per caption, zero-padded where a shape has fewer captions.
    text_mask: (S, C) bool, True where a caption exists (a shape may have none).
    """

    image: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor

    def __post_init__(self):
        s = self.image.shape[0]
        if self.text.shape[0] != s or self.text_mask.shape[0] != s:
            raise ValueError(f"feature counts differ: image {tuple(self.image.shape)}, text "
                             f"{tuple(self.text.shape)}, mask {tuple(self.text_mask.shape)}")
        if self.image.shape[-1] != self.text.shape[-1]:
            raise ValueError(f"image and text feature widths differ: {self.image.shape[-1]} vs "
                             f"{self.text.shape[-1]}")

    def __len__(self):
        return self.image.shape[0]

    @property
    def dim(self) -> int:
        return int(self.image.shape[-1])


def compute_features(clip: FrozenCLIP, triplets, batch_size: int = 256,
                     progress: bool = False) -> TripletFeatures:
    images = np.asarray(triplets.images)
    s, k = images.shape[:2]
    img = clip.encode_images(images.reshape(s * k, *images.shape[2:]), batch_size, progress)
    img = img.view(s, k, -1)
    width = max((len(c) for c in triplets.captions), default=0)
    flat = [c for caps in triplets.captions for c in caps]
    txt_flat = clip.encode_texts(flat, batch_size, progress) if flat else torch.zeros(0, img.shape[-1])
    text = torch.zeros(s, max(width, 1), img.shape[-1])
    mask = torch.zeros(s, max(width, 1), dtype=torch.bool)
    pos = 0
    for i, caps in enumerate(triplets.captions):
        text[i, :len(caps)] = txt_flat[pos:pos + len(caps)]
        mask[i, :len(caps)] = True
        pos += len(caps)
    return TripletFeatures(image=img, text=text, text_mask=mask)


def cached_features(clip: FrozenCLIP, triplets, path: Path, batch_size: int = 256,
                    progress: bool = False) -> TripletFeatures:
    """Load features from ``path`` or compute and write them there (atomically)."""
    path = Path(path)
    if path.exists():
        state = _load_torch(path)
        try:
            feats = TripletFeatures(**state)
        except TypeError as err:
            raise ValueError(f"cache file {path} does not hold triplet features: {err}") from err
        if len(feats) != len(triplets):
            raise ValueError(f"cache file {path} holds {len(feats)} shapes but the dataset has "
                             f"{len(triplets)}; delete it to rebuild")
        return feats
    feats = compute_features(clip, triplets, batch_size, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic(asdict(feats), path)
    return feats
