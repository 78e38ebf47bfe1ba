"""The depth-edge pre-pass and the ``step`` criterion in PyTorch: the GPU twin of :mod:`ex4d.depth_edges`.

Same results as the numba kernels bit for bit (the tests compare them on every option): the same float64
operations in the same order, integer colour arithmetic, exact selections (min/max, k-th value, sort), and
the noise level σ̂ finished on the host in Python floats (a CUDA division by a scalar goes through its
reciprocal). Work is batched over frames ([B, H, W] tensors). The snap is written for a GPU: the per-pixel
tests run on whole images, then only the ramp peaks (a few thousand per frame) are gathered into short
vectors, walked and split with at most ``snap_reach + snap_color_px`` steps of elementwise work, and their
zones written back in the numba kernel's order of precedence (nearest peak first, then the left one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import depth_edges as E
from .. import depth_snap as S

__all__ = ["noise_level_torch", "median3_torch", "step_faces_torch", "snap_torch", "median_torch",
           "prepare_depth_torch", "guard_faces_torch"]


def _left(t: torch.Tensor, k: int = 1) -> torch.Tensor:
    """t[..., max(j − k, 0)] along the last dim."""
    return torch.cat([t[..., :1].expand(*t.shape[:-1], k), t[..., :-k]], -1)


def _right(t: torch.Tensor, k: int = 1) -> torch.Tensor:
    """t[..., min(j + k, n − 1)] along the last dim."""
    return torch.cat([t[..., k:], t[..., -1:].expand(*t.shape[:-1], k)], -1)


def noise_level_torch(inv: torch.Tensor) -> list[float]:
    """σ̂ per frame (Python floats) of disparity [B, H, W] float64, as :func:`ex4d.depth_edges.noise_level`."""
    B, H, W = inv.shape
    if H < 3 or W < 3:
        return [0.0] * B
    ii = torch.clamp(2 + 4 * torch.arange((H - 3) // 4 + 1, device=inv.device), max=H - 2)
    jj = torch.clamp(2 + 4 * torch.arange((W - 3) // 4 + 1, device=inv.device), max=W - 2)
    c = inv[:, ii][:, :, jj]
    dx = ((inv[:, ii][:, :, jj - 1] - 2.0 * c) + inv[:, ii][:, :, jj + 1]).abs()
    dy = ((inv[:, ii - 1][:, :, jj] - 2.0 * c) + inv[:, ii + 1][:, :, jj]).abs()
    s = (torch.minimum(dx, dy) / c).reshape(B, -1)
    med = torch.kthvalue(s, (s.shape[1] - 1) // 2 + 1, dim=1).values
    return [float(v) / E.NOISE_SCALE for v in med.cpu().tolist()]


def _pass1(pm, p, q, qp, ratio, floor, ceil):
    jd = q - p
    sb = p - pm
    sa = qp - q
    x = torch.clamp(torch.maximum(jd - torch.maximum(sb, sa), torch.minimum(sb, sa) - jd), min=0.0)
    m = torch.minimum(p, q)
    return ((x > ratio * jd.abs()) & (x > floor * m)) | (jd.abs() > ceil * m)


def _pass2(pm, p, q, qp, ok_b, ok_a, like, floor):
    jd = q - p
    f = floor * torch.minimum(p, q)
    s = torch.where(ok_b, p - pm, qp - q)
    e = (jd - s).abs()
    one = (e > f) & (e > like * torch.maximum(jd.abs(), s.abs()))
    return torch.where(ok_b & ok_a, torch.zeros_like(one), torch.where(ok_b | ok_a, one, jd.abs() > f))


def _edge_breaks(inv: torch.Tensor, ratio: float, like: float, floor: torch.Tensor, ceil: torch.Tensor):
    """Breaks [B, L, n−1] of the edges along the last dim (floor, ceil: [B, 1, 1] relative thresholds)."""
    p, q = inv[..., :-1], inv[..., 1:]
    pm = _left(inv)[..., :-1]
    qp = _right(inv, 2)[..., :-1]
    h1 = _pass1(pm, p, q, qp, ratio, floor, ceil)
    n1 = h1.shape[-1]
    idx = torch.arange(n1, device=inv.device)
    ok_b = (idx == 0) | ~_left(h1)
    ok_a = (idx == n1 - 1) | ~_right(h1)
    return h1 | (~h1 & _pass2(pm, p, q, qp, ok_b, ok_a, like, floor))


def step_faces_torch(inv: torch.Tensor, K, config, sigmas: list[float]) -> torch.Tensor:
    """Occluded flags [B, 2·(H−1)·(W−1)] of the ``step`` criterion on disparity [B, H, W] float64."""
    B = inv.shape[0]
    th = [E.step_floors(K, config, s) for s in sigmas]

    def col(k):
        return torch.tensor([t[k] for t in th], dtype=torch.float64, device=inv.device).view(B, 1, 1)

    bh = _edge_breaks(inv, config.step_ratio, config.step_like, col(0), col(2))                      # [B, H, W−1]
    bv = _edge_breaks(inv.transpose(1, 2), config.step_ratio, config.step_like, col(1), col(3)).transpose(1, 2)
    f0 = bh[:, :-1, :] | bv[:, :, :-1]
    f1 = bv[:, :, 1:] | bh[:, 1:, :]
    return torch.stack([f0, f1], 1).reshape(B, -1)


def guard_faces_torch(guard: torch.Tensor) -> torch.Tensor:
    """Flags [B, 2·(H−1)·(W−1)]: grid faces with a corner on a guard pixel [B, H, W]."""
    a, b, c, d = guard[:, :-1, :-1], guard[:, :-1, 1:], guard[:, 1:, :-1], guard[:, 1:, 1:]
    return torch.stack([c | a | b, c | b | d], 1).reshape(guard.shape[0], -1)


def _row_dominant(inv: torch.Tensor) -> torch.Tensor:
    gx = (_right(inv) - _left(inv)).abs()
    gy = (_right(inv.transpose(1, 2)) - _left(inv.transpose(1, 2))).abs().transpose(1, 2)
    return gx >= gy


def _snap_rows(inv, cg, use_rgb, reach, cpx, min_step, across, gpx, move_tol):
    """One snap pass along the last dim of disparity [B, L, n] (cg [B, L, n−1] int32 colour gradients,
    min_step [B] float64, across [B, L, n] bool): (new disparity, guard [B, L, n], counts [B, 2])."""
    B, L, n = inv.shape
    dev = inv.device
    out = inv.clone()
    guard = torch.zeros((B, L, n), dtype=torch.bool, device=dev)
    counts = torch.zeros((B, 2), dtype=torch.int64, device=dev)
    if n < 2:
        return out, guard, counts
    flat = inv.reshape(B * L, n)
    if cg is not None:
        cg = cg.reshape(B * L, n - 1)
    d = flat[:, 1:] - flat[:, :-1]                                           # [BL, n−1]
    ad = d.abs()
    acr = across.reshape(B * L, n)
    nd = n - 1
    idx = torch.arange(nd, device=dev)
    pk = (ad > 0) & ((idx == 0) | (_left(ad) <= ad)) & ((idx == nd - 1) | (_right(ad) < S.PEAK_TOL * ad)) \
        & (acr[:, :-1] | acr[:, 1:])
    line, x = pk.nonzero(as_tuple=True)
    if line.numel() == 0:
        return out, guard, counts
    frame = line // L
    m = ad[line, x]
    sg = d[line, x] > 0

    def at(t, pos):                                                          # t[line, pos], pos clamped
        return t[line, pos.clamp(0, t.shape[1] - 1)]

    def dat(pos):
        return at(d, pos)

    wl = (x > 0) & ((dat(x - 1) > 0) == sg) & (dat(x - 1).abs() >= S.TOP_SHARE * m)
    wr = (x < nd - 1) & ((dat(x + 1) > 0) == sg) & (dat(x + 1).abs() >= S.TOP_SHARE * m)
    ramp = wl & wr
    fly = wl ^ wr
    # ramp walks: all reach steps at once, kept while every step before holds ([P, reach] tensors)
    ks = torch.arange(1, reach + 1, device=dev)

    def walk(pos, inside):
        v = d[line[:, None], pos.clamp(0, nd - 1)]
        ok = inside & ((v > 0) == sg[:, None]) & (v.abs() > S.RAMP_KEEP * m[:, None]) & (v.abs() <= m[:, None])
        ok = torch.cumprod(ok.to(torch.int8), 1).bool() & ramp[:, None]
        low = torch.where(ok, v.abs(), torch.full_like(v, math.inf)).amin(1)
        return ok.sum(1), low

    pl = x[:, None] - ks[None]
    pr = x[:, None] + ks[None]
    nl, lo_l = walk(pl, pl >= 0)
    nr, lo_r = walk(pr, pr <= nd - 1)
    e0, e1 = x - nl, x + nr
    lo = torch.minimum(m, torch.minimum(lo_l, lo_r))
    keep = ~(ramp & (lo >= S.PLANE_SHARE * m))
    # flying pixels: two edges alone
    f0 = torch.where(wl, x - 1, x)
    f1 = torch.where(wl, x, x + 1)
    alone = ~(((f0 > 0) & (dat(f0 - 1).abs() >= S.TOP_SHARE * m)) |
              ((f1 < nd - 1) & (dat(f1 + 1).abs() >= S.TOP_SHARE * m)))
    keep &= ~fly | alone
    e0 = torch.where(fly, f0, e0)
    e1 = torch.where(fly, f1, e1)
    a, b = e0, e1 + 1
    da, db = at(flat, a), at(flat, b)
    sa = (da - at(flat, a - 2)) * 0.5
    sb = (at(flat, b + 2) - db) * 0.5
    excess = ((db - da) - (b - a).to(torch.float64) * ((sa + sb) * 0.5)).abs()
    ms = min_step[frame]
    valid = keep & (excess > ms * torch.minimum(da, db)) & (m > S.PEAK_RATIO * torch.maximum(sa.abs(), sb.abs()))
    sharp = valid & ~ramp & ~fly
    counts[:, 1].index_add_(0, frame, sharp.to(torch.int64))
    sel = (valid & (ramp | fly)).nonzero(as_tuple=True)[0]
    if sel.numel() == 0:
        return out, guard, counts
    line, x, frame, a, b, da, db, sa, sb, ramp = (t[sel] for t in (line, x, frame, a, b, da, db, sa, sb, ramp))
    def at2(t, pos):                                                          # t[line, pos] for pos [P, O]
        return t[line[:, None], pos.clamp(0, t.shape[1] - 1)]

    # the depth's own split: the last inner pixel nearer the left shoulder's value
    p = a[:, None] + torch.arange(1, 2 * reach + 1, device=dev)[None]
    v = at2(flat, p)
    cond = (p < b[:, None]) & ((v - da[:, None]).abs() <= (v - db[:, None]).abs())
    k0 = torch.maximum(a, torch.where(cond, p, a[:, None]).amax(1))
    k = k0
    cz = torch.where(ramp, cpx, 0)
    z0 = (a - cz).clamp(min=0)
    z1 = (b + cz).clamp(max=n - 1)
    if use_rgb:
        # argmax of colour gain − penalty; ties: nearer k0, then the left one (one int64 key per candidate)
        kk = z0[:, None] + torch.arange(0, 2 * reach + 2 * cpx + 2, device=dev)[None]
        k0c, ac, bc = k0[:, None], a[:, None], b[:, None]
        lo_ = torch.minimum(kk, k0c)
        hi_ = torch.maximum(kk, k0c)
        inside = (torch.minimum(hi_, bc - 1) - torch.maximum(lo_, ac)).clamp(min=0)
        pen = S.SPLIT_COST_IN * inside + S.SPLIT_COST_OUT * (hi_ - lo_ - inside)
        g = at2(cg, kk).to(torch.int64) - pen
        key = (1_000_000 - g) * 100_000_000 + (kk - k0c).abs() * 10_000 + kk
        key = torch.where(kk < z1[:, None], key, torch.full_like(key, 1 << 62)).amin(1)
        k = torch.where(ramp & (key < (1 << 62)), key % 10_000, k0)
    up = db > da
    sa = torch.where((sa > 0) == up, torch.zeros_like(sa), sa)
    sb = torch.where((sb > 0) != up, torch.zeros_like(sb), sb)
    counts[:, 0].index_add_(0, frame, ramp.to(torch.int64))
    gflat = guard.view(B * L, n)
    if gpx > 0:
        p = k[:, None] - gpx + 1 + torch.arange(2 * gpx, device=dev)[None]
        ok = ramp[:, None] & (p >= 0) & (p <= n - 1)
        gflat[line[:, None].expand_as(p)[ok], p[ok]] = True
    # zones: a pixel follows the nearest peak (|p − x − ½|, then the smaller x): the key 2|p − x − ½|·n + x
    span = reach + cpx + 2
    o = torch.arange(-span, span + 1, device=dev)[None]
    p = x[:, None] + o
    ok = (p >= z0[:, None]) & (p <= z1[:, None])
    lin = line[:, None].expand_as(p)
    key = (2 * o - 1).abs() * n + x[:, None]
    owner = torch.full((B * L * n,), 1 << 62, dtype=torch.int64, device=dev)
    owner.scatter_reduce_(0, (lin * n + p)[ok], key[ok], reduce="amin")
    ok &= owner[(lin * n + p).clamp(0, B * L * n - 1)] == key
    orig = at2(flat, p)
    pf = p.to(torch.float64)
    left = torch.where(p <= a[:, None], orig, da[:, None] + (pf - a[:, None].to(torch.float64)) * sa[:, None])
    right = torch.where(p >= b[:, None], orig, db[:, None] + (pf - b[:, None].to(torch.float64)) * sb[:, None])
    v = torch.where(p <= k[:, None], left, right)
    oflat = out.view(B * L, n)
    oflat[lin[ok], p[ok]] = v[ok]
    ramp_owned = torch.zeros((B * L, n), dtype=torch.bool, device=dev)
    ramp_owned[lin[ok], p[ok]] = ramp[:, None].expand_as(p)[ok]
    moved = ramp_owned & ((oflat - flat).abs() > move_tol * torch.minimum(oflat, flat))
    gflat |= moved
    return out, guard, counts


def snap_torch(inv: torch.Tensor, rgb: torch.Tensor | None, config, sigmas: list[float]):
    """(disparity [B, H, W], guard [B, H, W] bool, softness [B] Python floats) of the ``snap`` sharpening of
    disparity [B, H, W] float64 guided by ``rgb`` [B, H, W, 3] uint8 (None: the depth alone); as
    :func:`ex4d.depth_edges.snap_depth` frame by frame."""
    B, H, W = inv.shape
    dev = inv.device
    use = rgb is not None
    ms = torch.tensor([config.snap_min_step + config.step_noise * s for s in sigmas], dtype=torch.float64, device=dev)
    rows = _row_dominant(inv)

    def grads(c):  # [B, L, n, 3] uint8 → [B, L, n−1] int32
        ci = c.to(torch.int32)
        return (ci[..., 1:, :] - ci[..., :-1, :]).abs().sum(-1)

    cg = grads(rgb) if use else None
    args = (config.snap_reach, config.snap_color_px)
    out, g1, c1 = _snap_rows(inv, cg, use, *args, ms, rows, config.snap_guard_px, config.snap_guard_move)
    cg_t = grads(rgb.transpose(1, 2)) if use else None
    out_t, g2, c2 = _snap_rows(out.transpose(1, 2).contiguous(), cg_t, use, *args, ms,
                               (~rows).transpose(1, 2).contiguous(), config.snap_guard_px, config.snap_guard_move)
    out = out_t.transpose(1, 2)
    guard = g1 | g2.transpose(1, 2)
    c = (c1 + c2).cpu().tolist()
    soft = [r / (r + s) if r + s else 0.0 for r, s in c]
    floor = inv.reshape(B, -1).amin(1).view(B, 1, 1) * 0.5
    on = torch.tensor([s >= S.SOFT_SHARE for s in soft], device=dev).view(B, 1, 1)
    return torch.where(on, torch.maximum(out, floor), inv), guard & on, soft


def _edge_pixels(inv: torch.Tensor, thr: float) -> torch.Tensor:
    out = torch.zeros_like(inv, dtype=torch.bool)
    for t in (inv, inv.transpose(1, 2)):
        p, q = t[..., :-1], t[..., 1:]
        e = (q - p).abs() > thr * torch.minimum(p, q)
        o = torch.zeros_like(t, dtype=torch.bool)
        o[..., :-1] |= e
        o[..., 1:] |= e
        out |= o if t is inv else o.transpose(1, 2)
    return out


def median_torch(inv: torch.Tensor) -> torch.Tensor:
    """The ``median`` baseline on disparity [B, H, W] float64, as :func:`ex4d.depth_edges.median_depth`."""
    out = inv.clone()
    B, H, W = inv.shape
    for side in S.MEDIAN_WINDOWS:
        r = side // 2
        marked = _edge_pixels(out, S.MEDIAN_EDGE)
        new = out.clone()
        for bi in range(B):
            mk = F.pad(marked[bi].to(torch.float64)[None, None], (r, r, r, r), value=0.0)
            real = F.pad(torch.ones((1, 1, H, W), dtype=torch.float64, device=inv.device), (r, r, r, r), value=0.0)
            any_m = F.max_pool2d(mk, side, stride=1)[0, 0] > 0
            todo = any_m.nonzero(as_tuple=True)
            if todo[0].numel() == 0:
                continue
            vals = F.pad(out[bi][None, None], (r, r, r, r), value=0.0)
            ii, jj = todo
            di = torch.arange(-r, r + 1, device=inv.device)
            wi = (ii[:, None, None] + r + di[None, :, None]).expand(-1, side, side).reshape(len(ii), -1)
            wj = (jj[:, None, None] + r + di[None, None, :]).expand(-1, side, side).reshape(len(ii), -1)
            v = vals[0, 0][wi, wj]
            use = (real[0, 0][wi, wj] > 0) & ~(mk[0, 0][wi, wj] > 0)
            v = torch.where(use, v, torch.full_like(v, math.inf))
            cnt = use.sum(1)
            srt = v.sort(1).values
            med = srt.gather(1, (cnt // 2).clamp(max=v.shape[1] - 1)[:, None])[:, 0]
            ok = cnt > 0
            new[bi][ii[ok], jj[ok]] = med[ok]
        out = new
    return out


def median3_torch(depth: torch.Tensor) -> torch.Tensor:
    """3×3 median [B, H, W] of [B, H, W] (borders replicated), exact: only min/max, no arithmetic.

    The same 19-exchange selection network as the numba ``median3``, on whole
    shifted views: about 30 elementwise kernels, against a sort per pixel for
    ``unfold(...).median`` (the slowest kernel of the GPU recon before).
    """
    H, W = depth.shape[-2:]
    q = F.pad(depth[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    p = [q[:, i:i + H, j:j + W] for i in range(3) for j in range(3)]
    mn, mx = torch.minimum, torch.maximum

    def sort2(a, b):
        p[a], p[b] = mn(p[a], p[b]), mx(p[a], p[b])

    for a, b in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8)):
        sort2(a, b)
    p[3] = mx(p[0], p[3])
    p[5] = mn(p[5], p[8])
    sort2(4, 7)
    p[6] = mx(p[3], p[6])
    p[4] = mx(p[1], p[4])
    p[2] = mn(p[2], p[5])
    p[4] = mn(p[4], p[7])
    sort2(4, 2)
    p[4] = mx(p[6], p[4])
    return mn(p[4], p[2])


def prepare_depth_torch(depth: torch.Tensor, rgb: torch.Tensor | None, config):
    """(mesh depth [B, H, W] float64, its disparity, σ̂ per frame, guard [B, H, W] or None, soft [B] bool list)
    of float64 z-depth [B, H, W], as :func:`ex4d.depth_edges.prepare_depth` frame by frame."""
    inv = 1.0 / depth
    sig = noise_level_torch(inv)
    mode = config.sharpen_mode
    B = depth.shape[0]
    if mode == "none":
        return depth, inv, sig, None, [False] * B
    new = inv
    passes = [E.denoise_passes(s) if config.denoise else 0 for s in sig]
    if max(passes) > 0:
        m1 = median3_torch(inv)
        m2 = median3_torch(m1) if max(passes) > 1 else m1
        sel = torch.tensor(passes, device=depth.device).view(B, 1, 1)
        new = torch.where(sel == 0, inv, torch.where(sel == 1, m1, m2))
        den = noise_level_torch(new)
        sig = [max(den[i], E.MEDIAN_LEFT[passes[i]] * sig[i]) if passes[i] else sig[i] for i in range(B)]
    guard, soft = None, [0.0] * B
    if mode == "snap":
        new, guard, soft = snap_torch(new, rgb, config, sig)
    else:
        new = median_torch(new)
    changed = new != inv
    d_out = torch.where(changed, 1.0 / new, depth)
    return d_out, torch.where(changed, new, inv), sig, guard, [s >= S.SOFT_SHARE for s in soft]
