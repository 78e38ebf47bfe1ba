"""Leaf-level offloading never tracks a module that does not run (UMT5's ``shared``, issue 15)."""

from __future__ import annotations

import torch

from ex4d.diffusion.encode import encode_prompts
from ex4d.diffusion.memory import apply_memory_plan, memory_plan, tied_root_children
from ex4d.diffusion.random_models import build_components


def test_every_offloaded_text_encoder_layer_runs():
    comps = build_components("tiny", seed=0)
    ref = encode_prompts(comps.tokenizer, comps.text_encoder, ["a cat walking"], torch.device("cpu"))
    te = comps.text_encoder
    assert tied_root_children(te) == ["shared"]
    apply_memory_plan(memory_plan("balanced", "cpu"), comps)
    tracked = {n: m for n, m in te.named_modules() if n and hasattr(m, "_diffusers_hook")
               and m._diffusers_hook.get_hook("group_offloading") is not None}
    assert "shared" not in tracked and "encoder.embed_tokens" in tracked
    ran = set()
    handles = [m.register_forward_pre_hook(lambda mod, args, name=n: ran.add(name)) for n, m in tracked.items()]
    out = encode_prompts(comps.tokenizer, te, ["a cat walking"], torch.device("cpu"))
    for h in handles:
        h.remove()
    assert set(tracked) - ran == set()  # what diffusers' prefetching reports as "not executed"
    assert torch.equal(out, ref)
