"""Import OpenShape's released SparseConv (MinkowskiEngine MinkResNet34) state dicts.

OpenShape's SparseConv checkpoints (e.g. Hugging Face ``OpenShape/openshape-spconv-all``:
``model.pt``, a dict whose ``state_dict`` holds the DDP-wrapped ``MinkResNet34``) are
MinkowskiEngine (ME) modules. :func:`convert_minkowski_state_dict` maps such a state dict, minus
its ``module.`` prefix, onto :class:`mmmixlab.encoders.SparseConvEncoder`
(``create_point_encoder("sparseconv", out_dim=1280, in_channels=6)``), which then loads it
with ``strict=True``. Every tensor is copied; only the convolution kernels are rearranged
(a permutation, no arithmetic), so the conversion is exact.

Facts it rests on, with the public source files each one was read from
(``OS`` = repository ``Colin97/OpenShape_code``, ``ME`` = repository ``NVIDIA/MinkowskiEngine``):

1. **ME kernel shape.** ``MinkowskiConvolution.kernel`` is a ``Parameter`` of shape
   ``(kernel_volume, in_channels, out_channels)``; when ``kernel_volume == 1`` and every stride
   is 1 (``requires_strided_coordinates``) it is ``(in_channels, out_channels)`` and the layer
   is ``input.F.mm(kernel)`` -- ME ``MinkowskiEngine/MinkowskiConvolution.py``
   (``MinkowskiConvolutionBase.__init__`` / ``forward``) and
   ``MinkowskiEngine/MinkowskiKernelGenerator.py`` (``kernel_volume = prod(kernel_size)``,
   ``requires_strided_coordinates``). No bias (``bias=False`` default, never set by OS).
2. **Offset order (HYPER_CUBE, the default region).** Kernel index ``k`` decomposes axis by
   axis starting from x: ``i_x = k % K_x``, then ``k //= K_x``, ``i_y = k % K_y``, ...: **x
   varies fastest**, z slowest, ``k = i_x + K_x * (i_y + K_y * i_z)``. Along an axis the offset
   is ``(i - K // 2) * dilation * tensor_stride`` for odd ``K`` and ``i * dilation *
   tensor_stride`` for even ``K`` (so ``{-(K-1)/2 .. (K-1)/2}`` resp. ``{0 .. K-1}`` times
   the input tensor stride; dilation is 1 everywhere in OS) -- ME ``src/kernel_region.hpp``
   (``kernel_region::coordinate_at``; the older ``kernel_region_iterator::operator++`` of the
   same file advances axis 0 first, the same order), and the note on even ``K`` in
   ``MinkowskiConvolution``'s docstring. The tensor stride in the region is the *input* map's:
   ME ``src/coordinate_map_manager.cpp`` (``CoordinateMapManager::kernel_map`` builds the
   ``cpu_kernel_region`` from ``in_map.get_tensor_stride()``; the stride-map shortcut there is
   taken only for pooling, ``is_pool``, never for a convolution).
3. **Correlation, not its transpose.** For each output coordinate ``u`` and kernel index
   ``k`` the input row is the one at ``coordinate_at(k, u) = u + offset_k`` (ME
   ``src/coordinate_map_cpu.hpp`` ``CoordinateMapCPU::kernel_map`` and ME
   ``src/coordinate_map_gpu.cu`` kernel-map kernels: ``in_map.find(coordinate_at(kernel_index,
   out_coordinate))``), and the product is ``out[u] += in[u + offset_k] @ kernel[k]`` with
   ``kernel[k]`` of shape ``(C_in, C_out)`` (ME ``src/convolution_cpu.cpp`` asserts
   ``kernel.dim() == 3`` and ``in_feat.size(1) == kernel.size(1)``, output width
   ``kernel.size(2)``; the column-major GEMM of ``ConvolutionForwardKernelCPU`` in ME
   ``src/convolution.hpp``, kept as ``src/convolution_kernel.hpp`` in later trees -- stored
   here from the fork ``5had3z/MinkowskiEngine`` -- reads ``kernel[k, i, o]`` as ``A[o, i]``).
   The docstring formula of ``MinkowskiConvolution`` says the same:
   ``x_u = sum_i W_i x_{i+u}``. Output coordinates of a strided conv are
   ``floor(c / s) * s`` (ME ``src/coordinate_map.hpp`` ``detail::stride_coordinate``).
4. **BatchNorm / Linear key names.** ``MinkowskiBatchNorm`` (and ``MinkowskiSyncBatchNorm``,
   which OS's ``src/example.py`` converts to before loading) wraps ``self.bn =
   torch.nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1)``: keys ``<name>.bn.weight``,
   ``.bn.bias``, ``.bn.running_mean``, ``.bn.running_var``, ``.bn.num_batches_tracked`` -- ME
   ``MinkowskiEngine/MinkowskiNormalization.py``. ``MinkowskiLinear`` wraps ``self.linear =
   torch.nn.Linear`` (keys ``<name>.linear.weight`` / ``.linear.bias``) -- ME
   ``MinkowskiEngine/MinkowskiOps.py``.
5. **OpenShape's MinkResNet34.** OS ``src/models/Minkowski.py`` (``MinkResNet``,
   ``MinkResNet34.LAYERS = (3, 4, 6, 3)``, ``PLANES[:4] = (32, 64, 128, 256)``,
   ``INIT_DIM = 32``): ``conv0p1s1`` (5^3) + ``bn0``; per stage ``i`` a 2^3 stride-2 conv
   ``conv1p1s2`` / ``conv2p2s2`` / ``conv3p4s2`` / ``conv4p8s2`` + ``bn1``..``bn4`` and
   ``block1``..``block4``; ``conv5`` = two ``get_conv_block`` (``conv5.{0,1}.0`` conv 3^3
   stride 2, ``conv5.{0,1}.1`` BN, LeakyReLU) to ``embedding_channel // 2`` and
   ``embedding_channel``; ``final`` = ``get_mlp_block(2 * embedding_channel, 1024)``
   (``final.0.0`` Linear without bias, ``final.0.1`` BN), ``final.1`` dropout,
   ``get_mlp_block(1024, 1024)`` (``final.2.*``), ``final.3`` Linear with bias. Blocks come
   from OS ``src/models/Minkowski_resnet.py`` ``ResNetBase._make_layer`` (stride 1: a
   ``downsample = Sequential(conv 1^3 stride 1, BN)`` on the first block of a stage whose
   width changes) with ME ``MinkowskiEngine/modules/resnet_block.py`` ``BasicBlock``
   (``conv1`` 3^3, ``norm1``, ``conv2`` 3^3, ``norm2``, ``downsample``). Sizes: OS
   ``src/configs/train.yaml`` (``in_channel: 6``, ``out_channel: 1280`` (=
   ``clip_embed_dim``), ``embedding_channel: 1024``, ``voxel_size: 0.02``); OS
   ``src/example.py`` loads ``checkpoint['state_dict']`` after removing ``module``, and calls
   the model with ``quantization_size=config.model.voxel_size``; OS ``README.md`` installs ME
   from its git master (the tree facts 1-4 were read from).

Layout here: :class:`mmmixlab.encoders.sparse.SparseConv3d` stores ``(C_out, K, K, K, C_in)``
with the kernel axes in (x, y, z) order and offsets enumerated x slowest
(``kernel_offsets``), the same offset ranges and the same correlation. So ME's ``kernel[k]``
with ``k = i_x + K*i_y + K*K*i_z`` is ``weight[:, i_x, i_y, i_z, :].T``: the ME tensor read as
``(K_z, K_y, K_x, C_in, C_out)`` is permuted by ``(4, 2, 1, 0, 3)``
(:func:`minkowski_kernel_to_weight`).
"""

from __future__ import annotations

import torch

__all__ = ["OPENSHAPE_VOXEL_SIZE", "convert_minkowski_state_dict", "looks_like_minkowski",
           "minkowski_kernel_to_weight", "openshape_key_map", "weight_to_minkowski_kernel"]

# OpenShape's MinkResNet34 (src/models/Minkowski.py, src/configs/train.yaml).
OPENSHAPE_VOXEL_SIZE = 0.02
_INIT_DIM = 32
_STEM_KERNEL = 5
_PLANES = (32, 64, 128, 256)
_LAYERS = (3, 4, 6, 3)
_DOWN_CONVS = ("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")
_EMBEDDING = 1024
_HEAD = 1024
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def minkowski_kernel_to_weight(kernel: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """ME kernel -> :class:`SparseConv3d` weight ``(C_out, K, K, K, C_in)``.

    ``kernel`` is ``(K^3, C_in, C_out)`` (ME's kernel index x fastest), or ``(C_in, C_out)``
    for ``kernel_size == 1`` (ME's matrix-multiply form of a 1^3 stride-1 conv).
    """
    k = kernel_size
    if kernel.dim() == 2:
        if k != 1:
            raise ValueError(f"a 2-d ME kernel is a 1^3 conv, got kernel_size={k}")
        c_in, c_out = kernel.shape
        return kernel.detach().t().reshape(c_out, 1, 1, 1, c_in).contiguous().clone()
    if kernel.dim() != 3 or kernel.shape[0] != k ** 3:
        raise ValueError(f"ME kernel for kernel_size={k} must be ({k ** 3}, C_in, C_out), got "
                         f"{tuple(kernel.shape)}")
    _, c_in, c_out = kernel.shape
    # k = i_x + K*i_y + K*K*i_z  ->  C-order axes (i_z, i_y, i_x)
    grid = kernel.detach().reshape(k, k, k, c_in, c_out)
    return grid.permute(4, 2, 1, 0, 3).contiguous().clone()


def weight_to_minkowski_kernel(weight: torch.Tensor, matmul_form: bool | None = None):
    """Inverse of :func:`minkowski_kernel_to_weight`: ``(C_out, K, K, K, C_in)`` -> ME layout.

    ``matmul_form`` (default: ``K == 1``) returns the ``(C_in, C_out)`` form ME uses for a 1^3
    stride-1 conv.
    """
    if weight.dim() != 5 or not weight.shape[1] == weight.shape[2] == weight.shape[3]:
        raise ValueError(f"weight must be (C_out, K, K, K, C_in), got {tuple(weight.shape)}")
    c_out, k, _, _, c_in = weight.shape
    if matmul_form is None:
        matmul_form = k == 1
    if matmul_form:
        if k != 1:
            raise ValueError(f"the matmul form exists only for K == 1, got K={k}")
        return weight.detach().reshape(c_out, c_in).t().contiguous().clone()
    grid = weight.detach().permute(3, 2, 1, 4, 0)  # (i_z, i_y, i_x, C_in, C_out)
    return grid.reshape(k ** 3, c_in, c_out).contiguous().clone()


def _bn(me_name: str, ours: str, channels: int, rows: list) -> None:
    for f in _BN_FIELDS:
        rows.append((f"{me_name}.{f}", f"{ours}.{f}",
                     () if f == "num_batches_tracked" else (channels,), None))


def _conv(me_name: str, ours: str, k: int, c_in: int, c_out: int, rows: list) -> None:
    shape = (c_in, c_out) if k == 1 else (k ** 3, c_in, c_out)  # fact 1: 1^3 stride 1 -> mm
    rows.append((f"{me_name}.kernel", f"{ours}.weight", shape, k))


def openshape_key_map(in_channels: int = 6, out_dim: int = 1280) -> list:
    """``(openshape_key, our_key, openshape_shape, kernel_size or None)`` for every tensor of
    OpenShape's ``MinkResNet34`` (no ``module.`` prefix), in module order."""
    rows: list = []
    _conv("conv0p1s1", "stem.0", _STEM_KERNEL, in_channels, _INIT_DIM, rows)
    _bn("bn0.bn", "stem.1.body.0", _INIT_DIM, rows)
    width = _INIT_DIM
    for i, (planes, depth) in enumerate(zip(_PLANES, _LAYERS)):
        _conv(_DOWN_CONVS[i], f"stages.{i}.0.0", 2, width, width, rows)
        _bn(f"bn{i + 1}.bn", f"stages.{i}.0.1.body.0", width, rows)
        for j in range(depth):
            me, ours = f"block{i + 1}.{j}", f"stages.{i}.{j + 1}"
            _conv(f"{me}.conv1", f"{ours}.branch.0.0", 3, width, planes, rows)
            _bn(f"{me}.norm1.bn", f"{ours}.branch.0.1.body.0", planes, rows)
            _conv(f"{me}.conv2", f"{ours}.branch.1.0", 3, planes, planes, rows)
            _bn(f"{me}.norm2.bn", f"{ours}.branch.1.1.body.0", planes, rows)
            if width != planes:  # _make_layer's downsample: first block of the stage only
                _conv(f"{me}.downsample.0", f"{ours}.shortcut.0", 1, width, planes, rows)
                _bn(f"{me}.downsample.1.bn", f"{ours}.shortcut.1.body.0", planes, rows)
            width = planes
    c_in = sum(_PLANES)
    for m, c_out in enumerate((_EMBEDDING // 2, _EMBEDDING)):
        _conv(f"conv5.{m}.0", f"fuse.{m}.0", 3, c_in, c_out, rows)
        _bn(f"conv5.{m}.1.bn", f"fuse.{m}.1.body.0", c_out, rows)
        c_in = c_out
    rows.append(("final.0.0.linear.weight", "head.0.weight", (_HEAD, 2 * _EMBEDDING), None))
    _bn("final.0.1.bn", "head.1", _HEAD, rows)
    rows.append(("final.2.0.linear.weight", "head.4.weight", (_HEAD, _HEAD), None))
    _bn("final.2.1.bn", "head.5", _HEAD, rows)
    rows.append(("final.3.linear.weight", "head.7.weight", (out_dim, _HEAD), None))
    rows.append(("final.3.linear.bias", "head.7.bias", (out_dim,), None))
    return rows


_TOP_LEVEL = {"conv0p1s1", "bn0", *_DOWN_CONVS, "bn1", "bn2", "bn3", "bn4", "block1", "block2",
              "block3", "block4", "conv5", "final"}


def _strip_ddp(state_dict: dict) -> tuple[dict, bool]:
    if state_dict and all(isinstance(k, str) and k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}, True
    return state_dict, False


def looks_like_minkowski(state_dict: dict) -> bool:
    """Whether ``state_dict`` (DDP ``module.`` prefix or not) is meant as OpenShape's
    MinkResNet34: it has ME convolution kernels (``<name>.kernel``) under MinkResNet34's
    top-level names. :func:`convert_minkowski_state_dict` then checks it tensor by tensor."""
    if not isinstance(state_dict, dict):
        return False
    sd, _ = _strip_ddp(state_dict)
    return any(isinstance(k, str) and k.endswith(".kernel") and k.split(".", 1)[0] in _TOP_LEVEL
               for k in sd)


def _infer_size(state_dict: dict, key: str, dim: int, axis: int, default: int) -> int:
    t = state_dict.get(key)
    if isinstance(t, torch.Tensor) and t.dim() == dim:
        return int(t.shape[axis])
    return default  # missing / odd: the shape check below names the key


def convert_minkowski_state_dict(state_dict: dict, in_channels: int | None = None,
                                 out_dim: int | None = None):
    """OpenShape ``MinkResNet34`` state dict -> (:class:`SparseConvEncoder` state dict, info).

    ``state_dict`` is a release's ``checkpoint["state_dict"]`` without the DDP ``module.``
    prefix (a prefix carried by every key is stripped too). ``in_channels`` and ``out_dim``
    default to what the stem kernel and the last linear layer say (6 and 1280 for the
    releases). Raises ValueError naming the first missing, mis-shaped (with both shapes) or
    unexpected key. ``info``: ``in_channels``, ``out_dim``, ``voxel_size`` (OpenShape's 0.02,
    also :class:`SparseConvConfig`'s default), ``encoder_kwargs`` for
    ``create_point_encoder("sparseconv", **encoder_kwargs)``, ``encoder_overrides`` (the same
    without ``out_dim`` / ``in_channels``), ``num_tensors`` and ``stripped_prefix``.
    """
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError("state_dict must be a non-empty dict of tensors")
    state_dict, stripped = _strip_ddp(state_dict)
    if in_channels is None:
        in_channels = _infer_size(state_dict, "conv0p1s1.kernel", 3, 1, 6)
    if out_dim is None:
        out_dim = _infer_size(state_dict, "final.3.linear.weight", 2, 0, 1280)
    rows = openshape_key_map(in_channels, out_dim)
    out = {}
    for me_key, our_key, shape, kernel_size in rows:
        if me_key not in state_dict:
            raise ValueError(f"missing key {me_key!r} (expected shape {shape}) in the "
                             f"MinkResNet34 state dict")
        t = state_dict[me_key]
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{me_key!r} is a {type(t).__name__}, not a tensor")  # noqa: TRY004
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{me_key!r} has shape {tuple(t.shape)}, expected {tuple(shape)} "
                             f"(OpenShape MinkResNet34 at in_channels={in_channels}, "
                             f"out_dim={out_dim})")
        if kernel_size is not None:
            out[our_key] = minkowski_kernel_to_weight(t, kernel_size)
        else:
            out[our_key] = t.detach().clone()
    known = {r[0] for r in rows}
    for k, t in state_dict.items():
        if k not in known:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"unexpected key {k!r} (shape {shape}) in the MinkResNet34 "
                             f"state dict")
    info = {"in_channels": in_channels, "out_dim": out_dim, "voxel_size": OPENSHAPE_VOXEL_SIZE,
            "encoder_kwargs": {"out_dim": out_dim, "in_channels": in_channels,
                               "voxel_size": OPENSHAPE_VOXEL_SIZE},
            "encoder_overrides": {"voxel_size": OPENSHAPE_VOXEL_SIZE},
            "num_tensors": len(out), "stripped_prefix": stripped}
    return out, info
