"""Inputs of the denoiser: checks, 4k+1 policies, seeded erosion, condition values, I2V first frame, sampler schedule."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ex4d.diffusion.conditioning import (check_inputs, condition_tensors, erode_masks, first_frame_mask, fit_frames,
                                         i2v_first_frame, initial_noise)
from ex4d.diffusion.config import GenerateConfig
from ex4d.diffusion.sampling import make_scheduler, original_sigmas
from ex4d.errors import Ex4dError


def test_sigmas_are_the_original_formula_exactly():
    for steps, shift in [(25, 5.0), (10, 3.0), (1, 5.0)]:
        sched = make_scheduler(steps, shift)
        s = torch.linspace(1, 0, steps + 1)[:-1]
        expected = shift * s / (1 + (shift - 1) * s)
        assert torch.equal(sched.sigmas[:-1], expected)
        assert torch.equal(original_sigmas(steps, shift), expected)
        assert sched.sigmas[-1] == 0
        assert torch.equal(sched.timesteps, expected * 1000)
    assert abs(float(make_scheduler(25, 5.0).sigmas[1]) - 5 * 0.96 / (1 + 4 * 0.96)) < 1e-7


def test_euler_step_is_x_plus_dsigma_v():
    sched = make_scheduler(25, 5.0)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 2, 4, 4, generator=g)
    for i, t in enumerate(sched.timesteps):
        out = sched.step(v, t, x, return_dict=False)[0]
        sigma_next = sched.sigmas[i + 1] if i + 1 < 25 else torch.tensor(0.0)
        assert torch.equal(out, x + v * (sigma_next - sched.sigmas[i]))
        x = out


def test_input_checks():
    color, mask = np.zeros((5, 32, 48, 3), np.uint8), np.ones((5, 32, 48), bool)
    assert check_inputs(color, mask) == (5, 32, 48)
    with pytest.raises(Ex4dError, match="multiple of 16"):
        check_inputs(color[:, :, :40], mask[:, :, :40])
    with pytest.raises(Ex4dError, match="uint8"):
        check_inputs(color.astype(np.float32), mask)
    with pytest.raises(Ex4dError, match="bool"):
        check_inputs(color, mask.astype(np.uint8))
    with pytest.raises(Ex4dError, match="does not match"):
        check_inputs(color, mask[:4])


def test_frame_count_policies():
    color = np.arange(7)[:, None, None, None].repeat(16, 1).repeat(16, 2).repeat(3, 3).astype(np.uint8)
    mask = np.ones((7, 16, 16), bool)
    with pytest.raises(Ex4dError, match="4k\\+1 frames \\(e.g. 5 or 9\\)"):
        fit_frames(color, mask, "exact")
    c, m, keep = fit_frames(color, mask, "trim")
    assert c.shape[0] == 5 and m.shape[0] == 5 and keep == 5
    c, m, keep = fit_frames(color, mask, "pad")
    assert c.shape[0] == 9 and keep == 7 and (c[7:] == 6).all()
    assert fit_frames(color[:5], mask[:5], "exact")[2] == 5


def test_erosion_is_seeded_and_configurable():
    mask = np.zeros((6, 40, 40), bool)
    mask[:, 8:32, 8:32] = True
    a, b = erode_masks(mask, (2, 8), seed=3), erode_masks(mask, (2, 8), seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, erode_masks(mask, (2, 8), seed=4))
    assert (a <= mask).all() and a.sum() < mask.sum()
    assert np.array_equal(erode_masks(mask, (0, 0)), mask)
    ref = cv2.erode(mask[0].astype(np.uint8) * 255, np.ones((3, 3), np.uint8)) > 127
    assert np.array_equal(erode_masks(mask, (3, 3))[0], ref)
    side = [int(f.any(0).sum()) for f in erode_masks(mask, (2, 8), seed=0)]
    assert all(24 - 7 <= s <= 24 - 1 for s in side)


def test_condition_values():
    color = np.full((1, 16, 16, 3), 200, np.uint8)
    mask = np.zeros((1, 16, 16), bool)
    mask[:, :, :8] = True
    cond, mpm = condition_tensors(color, mask, torch.float32)
    assert cond.shape == (1, 3, 1, 16, 16) and mpm.shape == (1, 3, 1, 16, 16)
    assert torch.allclose(cond[..., :8], torch.tensor(200 / 255 * 2 - 1)) and (cond[..., 8:] == -1).all()
    assert (mpm[..., :8] == 1).all() and (mpm[..., 8:] == -1).all()
    img = i2v_first_frame(cond)
    assert torch.allclose(img[..., :8], torch.tensor(199 * 2 / 255 - 1)) or torch.allclose(
        img[..., :8], torch.tensor(200 * 2 / 255 - 1))  # the original's truncating 8-bit round trip
    assert (img[..., 8:] == -1).all()
    levels = (img + 1) * 255 / 2
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # an 8-bit image


def test_first_frame_mask_and_noise():
    m = first_frame_mask(9, 4, 6)
    assert m.shape == (1, 4, 3, 4, 6)
    assert (m[:, :, 0] == 1).all() and (m[:, :, 1:] == 0).all()
    n = initial_noise(0, (1, 16, 3, 4, 6))
    assert torch.equal(n, torch.randn((1, 16, 3, 4, 6), generator=torch.Generator().manual_seed(0)))


def test_config_validation_and_json():
    cfg = GenerateConfig()
    assert (cfg.steps, cfg.cfg, cfg.shift, cfg.seed, cfg.erosion) == (25, 5.0, 5.0, 0, (2, 8))
    assert GenerateConfig.from_json(cfg.to_json()) == cfg
    for bad in [dict(steps=0), dict(cfg=0.5), dict(memory="tiny"), dict(erosion=(5, 2)), dict(frames="round"),
                dict(compile=True, memory="low"), dict(device="tpu")]:
        with pytest.raises(Ex4dError):
            GenerateConfig(**bad).check()
    with pytest.raises(Ex4dError, match="unknown"):
        GenerateConfig.from_json({"stpes": 3})
