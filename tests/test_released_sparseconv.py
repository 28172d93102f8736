"""Importing OpenShape's MinkowskiEngine MinkResNet34 state dicts (mmmixlab.released_sparseconv).

The references here are written from MinkowskiEngine's semantics as read from its source (see
the module docstring of ``mmmixlab.released_sparseconv``), independently of ``sparse.py``:

- kernel tensor ``(K^3, C_in, C_out)``, or ``(C_in, C_out)`` for a 1^3 stride-1 conv;
- kernel index ``k = i_x + K*i_y + K*K*i_z`` (x fastest); per-axis offset
  ``(i - K//2) * tensor_stride`` for odd K, ``i * tensor_stride`` for even K;
- ``out[u] += in[u + offset_k] @ kernel[k]`` (correlation); strided outputs at
  ``floor(c / s) * s``.
"""

from __future__ import annotations

import pytest
import torch

from mmmixlab.encoders import create_point_encoder
from mmmixlab.encoders.sparse import SparseConv3d, SparseTensor
from mmmixlab.released_sparseconv import (
    convert_minkowski_state_dict,
    looks_like_minkowski,
    minkowski_kernel_to_weight,
    weight_to_minkowski_kernel,
)

# ---------------------------------------------------------------------------------------------
# A float64 MinkowskiEngine convolution, written from ME's kernel_region / kernel_map / GEMM.


def me_offset(k_index: int, kernel_size: int, tensor_stride: int) -> tuple[int, int, int]:
    """ME's ``kernel_region::coordinate_at`` for HYPER_CUBE: axis x first (fastest)."""
    off = []
    for _ in range(3):
        i = k_index % kernel_size
        k_index //= kernel_size
        off.append((i - kernel_size // 2) * tensor_stride if kernel_size % 2
                   else i * tensor_stride)
    return tuple(off)


def me_conv(coords: list, feats: torch.Tensor, tensor_stride: int, kernel: torch.Tensor,
            kernel_size: int, stride: int = 1):
    """(out coords, out feats, out tensor stride) of ME's MinkowskiConvolution, float64."""
    if kernel.dim() == 2:  # ME's 1^3 stride-1 conv: input.F.mm(kernel)
        assert kernel_size == 1 and stride == 1
        return coords, feats @ kernel, tensor_stride
    index = {c: i for i, c in enumerate(coords)}
    if stride == 1:
        out_coords = list(coords)
    else:
        s = tensor_stride * stride
        out_coords = sorted({(c[0], c[1] // s * s, c[2] // s * s, c[3] // s * s)
                             for c in coords})
    out = feats.new_zeros((len(out_coords), kernel.shape[2]))
    for k in range(kernel_size ** 3):
        dx, dy, dz = me_offset(k, kernel_size, tensor_stride)
        ins, outs = [], []
        for o, (b, x, y, z) in enumerate(out_coords):
            i = index.get((b, x + dx, y + dy, z + dz))
            if i is not None:
                ins.append(i)
                outs.append(o)
        if ins:
            out.index_add_(0, torch.tensor(outs), feats[torch.tensor(ins)] @ kernel[k])
    return out_coords, out, tensor_stride * stride


def ours(coords: list, feats: torch.Tensor, tensor_stride: int, kernel: torch.Tensor,
         kernel_size: int, stride: int = 1):
    """The same conv through our SparseConv3d after conversion; rows keyed by coordinate."""
    c_in, c_out = kernel.shape[-2:]
    conv = SparseConv3d(c_in, c_out, kernel_size, stride).double()
    with torch.no_grad():
        conv.weight.copy_(minkowski_kernel_to_weight(kernel, kernel_size))
    batch = max(c[0] for c in coords) + 1
    x = SparseTensor(torch.tensor(coords, dtype=torch.long), feats, tensor_stride, batch)
    y = conv(x)
    assert y.stride == tensor_stride * stride
    return {tuple(c): f for c, f in zip(y.coords.tolist(), y.feats.detach())}


# ---------------------------------------------------------------------------------------------
# (a) the offset order, pinned by hand-computed numbers


def ramp_kernel(kernel_size: int) -> torch.Tensor:
    """1 -> 1 channel ME kernel whose entry k is k + 1."""
    k3 = kernel_size ** 3
    return torch.arange(1, k3 + 1, dtype=torch.float64).reshape(k3, 1, 1)


HAND_CASES = [
    # kernel 3 at tensor stride 1: A=(0,0,0)=1, B=(1,0,0)=10, C=(0,0,1)=100, D=(0,1,0)=1000.
    # Offsets into ME's index (x fastest, centre 13): (+1,0,0)->14, (0,+1,0)->16, (0,0,+1)->22,
    # (-1,0,0)->12, (-1,0,+1)->21, (-1,+1,0)->15, (0,0,-1)->4, (+1,0,-1)->5, (0,+1,-1)->7,
    # (0,-1,0)->10, (+1,-1,0)->11, (0,-1,+1)->19; entry = index + 1.
    ("k3 x/y/z neighbours", 3, 1, 1,
     [((0, 0, 0, 0), 1.0), ((0, 1, 0, 0), 10.0), ((0, 0, 0, 1), 100.0), ((0, 0, 1, 0), 1000.0)],
     {(0, 0, 0, 0): 14 * 1 + 15 * 10 + 23 * 100 + 17 * 1000,      # 19464
      (0, 1, 0, 0): 14 * 10 + 13 * 1 + 22 * 100 + 16 * 1000,      # 18353
      (0, 0, 0, 1): 14 * 100 + 5 * 1 + 6 * 10 + 8 * 1000,         # 9465
      (0, 0, 1, 0): 14 * 1000 + 11 * 1 + 12 * 10 + 20 * 100}),    # 16131
    # kernel 2 stride 2: every voxel of the cell [0,1]^3 lands on (0,0,0); index i_x+2i_y+4i_z.
    ("k2 s2 cell", 2, 2, 1,
     [((0, 0, 0, 0), 1.0), ((0, 1, 0, 0), 10.0), ((0, 0, 1, 0), 100.0), ((0, 0, 0, 1), 1000.0),
      ((0, 1, 1, 1), 10000.0)],
     {(0, 0, 0, 0): 1 * 1 + 2 * 10 + 3 * 100 + 5 * 1000 + 8 * 10000}),  # 85321
    # kernel 2 stride 2, negative coordinate: -1 floors to -2, offset +1 -> index 1.
    ("k2 s2 negative", 2, 2, 1, [((0, -2, 0, 0), 10.0), ((0, -1, 0, 0), 1.0)],
     {(0, -2, 0, 0): 1 * 10 + 2 * 1}),
    # kernel 3 at tensor stride 2: the x neighbour is 2 voxels away, still index 14.
    ("k3 tensor stride 2", 3, 1, 2, [((0, 0, 0, 0), 1.0), ((0, 2, 0, 0), 10.0)],
     {(0, 0, 0, 0): 14 * 1 + 15 * 10, (0, 2, 0, 0): 14 * 10 + 13 * 1}),
    # kernel 2 stride 2 at tensor stride 2: cell [0,2]^3 -> (0,0,0); (0,2,0) is index 2.
    ("k2 s2 tensor stride 2", 2, 2, 2, [((0, 0, 0, 0), 1.0), ((0, 0, 2, 0), 10.0)],
     {(0, 0, 0, 0): 1 * 1 + 3 * 10}),
]


@pytest.mark.parametrize("name,k,stride,ts,voxels,expected", HAND_CASES,
                         ids=[c[0] for c in HAND_CASES])
def test_offset_order_hand_computed(name, k, stride, ts, voxels, expected):
    coords = [c for c, _ in voxels]
    feats = torch.tensor([[f] for _, f in voxels], dtype=torch.float64)
    kernel = ramp_kernel(k)
    ref_coords, ref, _ = me_conv(coords, feats, ts, kernel, k, stride)
    got = ours(coords, feats, ts, kernel, k, stride)
    assert set(got) == set(ref_coords) == set(expected)
    for c, value in expected.items():
        assert ref[ref_coords.index(c), 0].item() == value  # the reference agrees with the hand
        assert got[c].item() == value                        # and so does the conversion


def test_hand_case_discriminates_orders():
    """x-slowest (no permutation) or the transposed sign would give other numbers."""
    coords = [c for c, _ in HAND_CASES[0][4]]
    feats = torch.tensor([[f] for _, f in HAND_CASES[0][4]], dtype=torch.float64)
    kernel = ramp_kernel(3)
    naive = SparseConv3d(1, 1, 3).double()  # ME kernel reshaped without permuting the axes
    with torch.no_grad():
        naive.weight.copy_(kernel.reshape(1, 3, 3, 3, 1))
    x = SparseTensor(torch.tensor(coords), feats, 1, 1)
    assert naive(x).feats[0, 0].item() != 19464
    flipped = kernel.flip(0)  # out[u] = sum W[k] in[u - off_k]
    assert ours(coords, feats, 1, flipped, 3)[(0, 0, 0, 0)].item() != 19464


# ---------------------------------------------------------------------------------------------
# the float64 ME reference against the converted SparseConv3d, random clouds


def random_voxels(seed: int, tensor_stride: int, n: int = 60, extent: int = 5, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    coords = set()
    while len(coords) < n:
        b = int(torch.randint(batch, (1,), generator=g))
        xyz = (torch.randint(-extent, extent, (3,), generator=g) * tensor_stride).tolist()
        coords.add((b, *xyz))
    return sorted(coords)


@pytest.mark.parametrize("k,stride,ts", [(1, 1, 1), (3, 1, 1), (5, 1, 1), (2, 2, 1), (2, 2, 2),
                                         (3, 2, 1), (3, 2, 2), (3, 1, 4), (2, 2, 8)])
def test_converted_conv_matches_minkowski_reference(k, stride, ts):
    g = torch.Generator().manual_seed(100 * k + 10 * stride + ts)
    coords = random_voxels(k + stride + ts, ts)
    c_in, c_out = 3, 4
    feats = torch.randn((len(coords), c_in), generator=g, dtype=torch.float64)
    shape = (c_in, c_out) if (k == 1 and stride == 1) else (k ** 3, c_in, c_out)
    kernel = torch.randn(shape, generator=g, dtype=torch.float64)
    ref_coords, ref, _ = me_conv(coords, feats, ts, kernel, k, stride)
    got = ours(coords, feats, ts, kernel, k, stride)
    assert set(got) == set(ref_coords)
    mine = torch.stack([got[c] for c in ref_coords])
    torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_kernel_layout_round_trip(k):
    w = torch.randn(4, k, k, k, 3)
    me = weight_to_minkowski_kernel(w)
    assert me.shape == ((3, 4) if k == 1 else (k ** 3, 3, 4))
    assert torch.equal(minkowski_kernel_to_weight(me, k), w)
    if k == 1:  # the (1, C_in, C_out) form of a 1^3 strided conv reads the same
        assert torch.equal(minkowski_kernel_to_weight(weight_to_minkowski_kernel(w, False), 1),
                           w)


# ---------------------------------------------------------------------------------------------
# (b) a state dict in OpenShape's key names and shapes


def openshape_shapes(in_channels: int = 6, out_dim: int = 1280) -> dict:
    """Key -> shape of OpenShape's MinkResNet34 (src/models/Minkowski.py, ME BasicBlock /
    MinkowskiBatchNorm / MinkowskiLinear), without the DDP ``module.`` prefix."""
    shapes = {}

    def bn(name, c):
        for f in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{f}"] = (c,)
        shapes[f"{name}.bn.num_batches_tracked"] = ()

    shapes["conv0p1s1.kernel"] = (125, in_channels, 32)
    bn("bn0", 32)
    inplanes = 32
    for i, (planes, blocks, down) in enumerate(zip(
            (32, 64, 128, 256), (3, 4, 6, 3),
            ("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")), start=1):
        shapes[f"{down}.kernel"] = (8, inplanes, inplanes)
        bn(f"bn{i}", inplanes)
        for j in range(blocks):
            shapes[f"block{i}.{j}.conv1.kernel"] = (27, inplanes, planes)
            bn(f"block{i}.{j}.norm1", planes)
            shapes[f"block{i}.{j}.conv2.kernel"] = (27, planes, planes)
            bn(f"block{i}.{j}.norm2", planes)
            if j == 0 and inplanes != planes:
                shapes[f"block{i}.{j}.downsample.0.kernel"] = (inplanes, planes)
                bn(f"block{i}.{j}.downsample.1", planes)
            inplanes = planes
    shapes["conv5.0.0.kernel"] = (27, 480, 512)
    bn("conv5.0.1", 512)
    shapes["conv5.1.0.kernel"] = (27, 512, 1024)
    bn("conv5.1.1", 1024)
    shapes["final.0.0.linear.weight"] = (1024, 2048)
    bn("final.0.1", 1024)
    shapes["final.2.0.linear.weight"] = (1024, 1024)
    bn("final.2.1", 1024)
    shapes["final.3.linear.weight"] = (out_dim, 1024)
    shapes["final.3.linear.bias"] = (out_dim,)
    return shapes


def random_openshape_state_dict(seed: int = 0, dtype=torch.float32, **sizes) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in openshape_shapes(**sizes).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.randint(1, 10 ** 6, (), generator=g, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(shape, generator=g, dtype=dtype)
        elif key.endswith("bn.weight"):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g, dtype=dtype)
        elif key.endswith(("running_mean", "bn.bias", "linear.bias")):
            sd[key] = 0.1 * torch.randn(shape, generator=g, dtype=dtype)
        else:  # kernels and linear weights, fan-in scaled
            if key.endswith("kernel"):  # ME (K^3, C_in, C_out) or (C_in, C_out)
                fan_in = shape[0] * shape[1] if len(shape) == 3 else shape[0]
            else:  # nn.Linear (out, in)
                fan_in = shape[1]
            sd[key] = torch.randn(shape, generator=g, dtype=dtype) / fan_in ** 0.5
    return sd


def test_openshape_state_dict_loads_strict():
    sd = random_openshape_state_dict()
    converted, info = convert_minkowski_state_dict(sd)
    model = create_point_encoder("sparseconv", out_dim=1280, in_channels=6)
    model.load_state_dict(converted, strict=True)
    assert info["in_channels"] == 6 and info["out_dim"] == 1280
    assert info["voxel_size"] == 0.02 and info["num_tensors"] == len(sd) == 266
    assert not info["stripped_prefix"]
    ours_sd = model.state_dict()
    # BN statistics and linear layers are copied verbatim
    assert torch.equal(ours_sd["stem.1.body.0.running_var"], sd["bn0.bn.running_var"])
    assert torch.equal(ours_sd["stages.1.1.shortcut.1.body.0.running_mean"],
                       sd["block2.0.downsample.1.bn.running_mean"])
    assert ours_sd["stages.2.3.branch.1.1.body.0.num_batches_tracked"] == \
        sd["block3.2.norm2.bn.num_batches_tracked"]
    assert torch.equal(ours_sd["head.7.bias"], sd["final.3.linear.bias"])
    assert torch.equal(ours_sd["head.4.weight"], sd["final.2.0.linear.weight"])
    # kernels: ours[o, ix, iy, iz, i] == ME[ix + K*iy + K*K*iz, i, o]
    for ours_key, me_key, k in [("stem.0.weight", "conv0p1s1.kernel", 5),
                                ("stages.3.0.0.weight", "conv4p8s2.kernel", 2),
                                ("stages.2.1.branch.0.0.weight", "block3.0.conv1.kernel", 3),
                                ("fuse.1.0.weight", "conv5.1.0.kernel", 3)]:
        w, me = ours_sd[ours_key], sd[me_key]
        for ix in range(k):
            for iy in range(k):
                for iz in range(k):
                    assert torch.equal(w[:, ix, iy, iz, :], me[ix + k * iy + k * k * iz].T)
    w, me = ours_sd["stages.3.1.shortcut.0.weight"], sd["block4.0.downsample.0.kernel"]
    assert torch.equal(w[:, 0, 0, 0, :], me.T)


def test_ddp_prefix_is_stripped():
    sd = {f"module.{k}": v for k, v in random_openshape_state_dict(1).items()}
    converted, info = convert_minkowski_state_dict(sd)
    assert info["stripped_prefix"]
    create_point_encoder("sparseconv", **info["encoder_kwargs"]).load_state_dict(converted)


def test_looks_like_minkowski():
    sd = random_openshape_state_dict(5)
    assert looks_like_minkowski(sd)
    assert looks_like_minkowski({f"module.{k}": v for k, v in sd.items()})
    model = create_point_encoder("sparseconv", out_dim=1280, in_channels=6)
    assert not looks_like_minkowski(model.state_dict())
    assert not looks_like_minkowski({"ppat.cls_token": torch.zeros(1, 1, 8)})
    assert not looks_like_minkowski([])


def test_sizes_are_inferred():
    sd = random_openshape_state_dict(2, in_channels=3, out_dim=768)
    converted, info = convert_minkowski_state_dict(sd)
    assert (info["in_channels"], info["out_dim"]) == (3, 768)
    create_point_encoder("sparseconv", **info["encoder_kwargs"]).load_state_dict(converted)


def test_errors_name_the_key():
    sd = random_openshape_state_dict(3)
    missing = dict(sd)
    del missing["block2.1.norm1.bn.running_var"]
    with pytest.raises(ValueError, match=r"missing key 'block2\.1\.norm1\.bn\.running_var'"):
        convert_minkowski_state_dict(missing)
    bad = dict(sd)
    bad["block3.0.downsample.0.kernel"] = torch.zeros(1, 64, 128)
    with pytest.raises(ValueError, match=r"'block3\.0\.downsample\.0\.kernel' has shape "
                                         r"\(1, 64, 128\), expected \(64, 128\)"):
        convert_minkowski_state_dict(bad)
    extra = dict(sd)
    extra["logit_scale"] = torch.zeros(())
    with pytest.raises(ValueError, match=r"unexpected key 'logit_scale'"):
        convert_minkowski_state_dict(extra)
    with pytest.raises(ValueError, match="non-empty"):
        convert_minkowski_state_dict({})


# ---------------------------------------------------------------------------------------------
# end to end: OpenShape's MinkResNet34 forward (eval) in float64 from the ME state dict


def me_bn(sd, name, x):
    p = {f: sd[f"{name}.bn.{f}"] for f in ("weight", "bias", "running_mean", "running_var")}
    return (x - p["running_mean"]) / (p["running_var"] + 1e-5).sqrt() * p["weight"] + p["bias"]


def openshape_forward(sd, voxels: list, feats: torch.Tensor, batch: int) -> torch.Tensor:
    """``MinkResNet.forward`` of src/models/Minkowski.py on one point per voxel, eval mode."""
    relu, leaky = torch.relu, torch.nn.functional.leaky_relu  # ME defaults: slope 0.01
    c, f, ts = me_conv(voxels, feats, 1, sd["conv0p1s1.kernel"], 5)
    f = relu(me_bn(sd, "bn0", f))
    outs = []
    for i, (down, blocks) in enumerate(zip(("conv1p1s2", "conv2p2s2", "conv3p4s2",
                                            "conv4p8s2"), (3, 4, 6, 3)), start=1):
        c, f, ts = me_conv(c, f, ts, sd[f"{down}.kernel"], 2, 2)
        f = relu(me_bn(sd, f"bn{i}", f))
        for j in range(blocks):
            name = f"block{i}.{j}"
            _, h, _ = me_conv(c, f, ts, sd[f"{name}.conv1.kernel"], 3)
            h = relu(me_bn(sd, f"{name}.norm1", h))
            _, h, _ = me_conv(c, h, ts, sd[f"{name}.conv2.kernel"], 3)
            h = me_bn(sd, f"{name}.norm2", h)
            if f"{name}.downsample.0.kernel" in sd:
                _, r, _ = me_conv(c, f, ts, sd[f"{name}.downsample.0.kernel"], 1)
                r = me_bn(sd, f"{name}.downsample.1", r)
            else:
                r = f
            f = relu(h + r)
        outs.append((c, f, ts))
    sliced = []  # slice: each stride-1 voxel reads its enclosing voxel at the stage's stride
    for c, f, s in outs:
        index = {v: n for n, v in enumerate(c)}
        rows = [index[(b, x // s * s, y // s * s, z // s * s)] for b, x, y, z in voxels]
        sliced.append(f[torch.tensor(rows)])
    c, f, ts = voxels, torch.cat(sliced, dim=1), 1
    for m in range(2):
        c, f, ts = me_conv(c, f, ts, sd[f"conv5.{m}.0.kernel"], 3, 2)
        f = leaky(me_bn(sd, f"conv5.{m}.1", f))
    b = torch.tensor([v[0] for v in c])
    pooled = torch.cat([torch.stack([f[b == n].max(0).values for n in range(batch)]),
                        torch.stack([f[b == n].mean(0) for n in range(batch)])], dim=1)
    h = leaky(me_bn(sd, "final.0.1", pooled @ sd["final.0.0.linear.weight"].T))
    h = leaky(me_bn(sd, "final.2.1", h @ sd["final.2.0.linear.weight"].T))
    return h @ sd["final.3.linear.weight"].T + sd["final.3.linear.bias"]


def test_converted_encoder_matches_openshape_forward():
    g = torch.Generator().manual_seed(7)
    batch, n = 2, 120
    clouds, voxels, feats = [], [], []
    for b in range(batch):
        cells = set()
        while len(cells) < n:
            cells.add(tuple(torch.randint(-9, 9, (3,), generator=g).tolist()))
        cells = sorted(cells)
        # one point per voxel, a quarter voxel in: floor and round agree on the voxel
        xyz = (torch.tensor(cells, dtype=torch.float64) + 0.25) * 0.02
        rgb = torch.rand((n, 3), generator=g, dtype=torch.float64)
        pts = torch.cat([xyz, rgb], dim=1)
        clouds.append(pts)
        voxels += [(b, *c) for c in cells]
        feats.append(pts)
    sd = random_openshape_state_dict(4, dtype=torch.float64)
    ref = openshape_forward(sd, voxels, torch.cat(feats), batch)
    converted, info = convert_minkowski_state_dict(sd)
    model = create_point_encoder("sparseconv", **info["encoder_kwargs"]).double().eval()
    model.load_state_dict(converted, strict=True)
    with torch.no_grad():
        got = model(torch.stack(clouds))
    assert got.shape == (batch, 1280)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))
