"""Nothing in an adapter file is trusted: metadata fields, tensor dtypes, shapes and values are checked before use.

Every bad file must give one Ex4dError naming the field (or tensor), its value and what is accepted, before any
size it declares is used to allocate; ``ex4d convert-adapter`` never overwrites a file without ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import os
import time
import tracemalloc

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ex4d.diffusion.adapter_spec import AdapterSpec
from ex4d.diffusion.checkpoint import (export_original_ckpt, inspect_adapter, load_adapter, load_original_ckpt,
                                       original_key_shapes, save_adapter_safetensors)
from ex4d.diffusion.random_models import random_adapter
from ex4d.errors import Ex4dError

SPEC = AdapterSpec(num_layers=2, dim=32, ffn_dim=64, z_dim=4, hidden=16, rank=4, alpha=4.0)


def cli(*argv: str) -> int:
    from ex4d.cli import main

    return main(list(argv))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(tensors, metadata) of a valid tiny safetensors adapter."""
    path = tmp_path_factory.mktemp("adapter") / "a.safetensors"
    save_adapter_safetensors(random_adapter(SPEC, seed=3), path)
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def write(tmp_path, good, name="bad.safetensors", meta=None, drop=(), tensors=None):
    """A safetensors adapter from ``good`` with metadata changes (None value = field removed) and tensor changes."""
    t, m = dict(good[0]), dict(good[1])
    for k, v in (meta or {}).items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    for k in drop:
        t.pop(k)
    t.update(tensors or {})
    path = tmp_path / name
    save_file(t, str(path), metadata=m)
    return path


def refused(path, *words, expected=None):
    """The one-line Ex4dError of loading ``path`` (also from the header-only check); contains every word."""
    for fn in (load_adapter, inspect_adapter):
        with pytest.raises(Ex4dError) as e:
            fn(path, expected=expected)
        msg = str(e.value)
        for w in words:
            assert w in msg, (w, msg)
        assert str(path) in msg
        assert len(msg) < 1600  # at most the short key listing
    return msg


def test_a_valid_file_loads_and_inspects(tmp_path, good):
    path = write(tmp_path, good, "ok.safetensors")
    assert inspect_adapter(path) == SPEC == load_adapter(path).spec


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-1", "0", "0.0", "1e400", "1e7", "abc", "",
                                   "16.0.0", "\u0661\u0666", "0x10", "1_6"])
def test_alpha_must_be_a_finite_positive_number(tmp_path, good, value):
    refused(write(tmp_path, good, meta={"alpha": value}), "alpha", "finite number")


@pytest.mark.parametrize("field", ["num_layers", "dim", "ffn_dim", "z_dim", "hidden", "rank"])
@pytest.mark.parametrize("value", ["100000000", "0", "-3", "4.0", "abc", "1e3", " 4", "\u0664", "", "99999999999999"])
def test_dimensions_must_be_integers_in_range(tmp_path, good, field, value):
    refused(write(tmp_path, good, meta={field: value}), field, "expected an integer")


@pytest.mark.parametrize("field", ["num_layers", "dim", "ffn_dim", "z_dim", "hidden", "rank", "alpha", "targets",
                                   "patch_size", "format", "format_version"])
def test_every_field_is_required(tmp_path, good, field):
    refused(write(tmp_path, good, meta={field: None}), field if field != "format" else "not an ex4d adapter")


def test_huge_num_layers_fails_fast_without_allocating(tmp_path, good):
    path = write(tmp_path, good, meta={"num_layers": "1000"})  # in range, but the file holds 2 blocks
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(Ex4dError, match="missing"):
        load_adapter(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 << 20
    for value in ("100000000", "1025", str(2**62)):
        refused(write(tmp_path, good, meta={"num_layers": value}), "num_layers", value[:12], "1..1024")
    assert time.perf_counter() - t0 < 60  # generous: only guards against building 1e8-entry tables


@pytest.mark.parametrize("value", ['["ffn.net.2"]', "not json", "[1, 2]", '{"a": 1}', "[" * 5000 + "]" * 5000,
                                   "[" * 3000, '"attn1.to_q"', "null", "x" * 10000])
def test_targets_must_be_the_lora_layers(tmp_path, good, value):
    refused(write(tmp_path, good, meta={"targets": value}), "targets", "expected")


def test_targets_with_a_duplicate_or_a_missing_layer(tmp_path, good):
    import json

    names = json.loads(good[1]["targets"])
    refused(write(tmp_path, good, meta={"targets": json.dumps(names[:-1])}), "targets")
    refused(write(tmp_path, good, meta={"targets": json.dumps(names + names[:1])}), "targets")
    refused(write(tmp_path, good, meta={"original_targets": '["q"]'}), "original_targets")
    reordered = write(tmp_path, good, "reordered.safetensors", meta={"targets": json.dumps(names[::-1])})
    assert load_adapter(reordered).spec == SPEC  # the order of the list does not matter


@pytest.mark.parametrize("value", ["[1, 2]", "[1, 2, 2, 2]", '"122"', "[1.5, 2, 2]", "[true, 2, 2]", "[0, 2, 2]",
                                   "[1, 2, 100]", "[[1], 2, 2]", "[-1, 2, 2]", "{}", "[1, 2, 2", "[1e400, 2, 2]"])
def test_patch_size_must_be_three_small_integers(tmp_path, good, value):
    refused(write(tmp_path, good, meta={"patch_size": value}), "patch_size")


def test_dims_must_agree_with_each_other_and_with_the_tensors(tmp_path, good):
    refused(write(tmp_path, good, meta={"rank": "33"}), "rank", "exceeds")  # rank > dim
    refused(write(tmp_path, good, meta={"rank": "8"}), "wrong shape", "lora.blocks.0")
    refused(write(tmp_path, good, meta={"hidden": "32"}), "wrong shape", "encoder.latent_encoder")
    refused(write(tmp_path, good, meta={"patch_size": "[1, 1, 1]"}), "wrong shape", "latent_patch_embedding")
    refused(write(tmp_path, good, meta={"num_layers": "1"}), "unexpected", "blocks.1")
    key = "lora.blocks.1.ffn.net.2.lora_A"
    refused(write(tmp_path, good, drop=[key]), "missing", key)
    refused(write(tmp_path, good, tensors={key: torch.zeros(4, 63)}), "wrong shape", key, "(4, 63)")
    refused(write(tmp_path, good, tensors={key: torch.zeros(4, 64, 1)}), "wrong shape", key)
    refused(write(tmp_path, good, tensors={"lora.blocks.0.extra": torch.zeros(1)}), "unexpected")
    many = {f"lora.blocks.9.x{i}": torch.zeros(1) for i in range(500)}
    refused(write(tmp_path, good, tensors=many), "holds 548 tensors", "has 48")
    spec14b = AdapterSpec()
    refused(write(tmp_path, good, "fine.safetensors"), "different model", "num_layers 2", expected=spec14b)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64,
                                   torch.float8_e4m3fn])
def test_tensors_must_be_floating_point(tmp_path, good, dtype):
    key = "lora.blocks.0.attn1.to_q.lora_A"
    refused(write(tmp_path, good, tensors={key: torch.zeros(4, 32).to(dtype)}), key, "dtype", "float32")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("key", ["lora.blocks.1.attn2.to_out.0.lora_B", "encoder.latent_encoder.2.bias"])
def test_non_finite_values_are_refused(tmp_path, good, bad, key):
    t = good[0][key].clone()
    t.view(-1)[-1] = bad
    path = write(tmp_path, good, tensors={key: t})
    assert inspect_adapter(path) == SPEC  # the header is fine; the values are checked on load
    with pytest.raises(Ex4dError, match="non-finite") as e:
        load_adapter(path)
    assert key in str(e.value) and "1 non-finite" in str(e.value)


def test_half_precision_files_load_and_float64_overflow_is_caught(tmp_path, good):
    half = {k: v.to(torch.bfloat16) for k, v in good[0].items()}
    assert load_adapter(write(tmp_path, (half, good[1]), "half.safetensors")).spec == SPEC
    key = "lora.blocks.0.attn1.to_k.lora_B"
    big = good[0][key].double()
    big[0, 0] = 1e300  # finite in float64, inf in float32
    with pytest.raises(Ex4dError, match="non-finite"):
        load_adapter(write(tmp_path, good, tensors={key: big}))


def test_not_safetensors_at_all(tmp_path):
    for name, data in (("empty.safetensors", b""), ("junk.safetensors", b"\xff" * 100),
                       ("huge_header.safetensors", (2**62).to_bytes(8, "little") + b"{}"),
                       ("big_header.safetensors", (100 << 20).to_bytes(8, "little") + b"{" * 1000),
                       ("bad_json.safetensors", (5).to_bytes(8, "little") + b"{{{{{")):
        (tmp_path / name).write_bytes(data)
        refused(tmp_path / name, "cannot read")


# --------------------------------------------------------------------------- the original ex4d.ckpt


def original(spec=SPEC):
    return {k: torch.randn(s) * 0.1 for k, s in original_key_shapes(spec).items()}


def test_original_values_dtypes_and_block_indices(tmp_path):
    sd = original()
    sd["blocks.1.ffn.0.lora_A.default.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.ckpt")
    with pytest.raises(Ex4dError, match="non-finite") as e:
        load_original_ckpt(tmp_path / "nan.ckpt")
    assert "blocks.1.ffn.0.lora_A.default.weight" in str(e.value)

    sd = original()
    sd["latent_encoder.0.bias"] = torch.zeros(16, dtype=torch.int64)
    torch.save(sd, tmp_path / "int.ckpt")
    refused(tmp_path / "int.ckpt", "latent_encoder.0.bias", "dtype")

    sd = original()
    sd["blocks.100000000.self_attn.q.lora_A.default.weight"] = torch.zeros(4, 32)
    torch.save(sd, tmp_path / "far.ckpt")
    refused(tmp_path / "far.ckpt", "block 100000000", "1024")

    sd = {k: v for k, v in original(AdapterSpec(**{**SPEC.__dict__, "num_layers": 4})).items()
          if not k.startswith("blocks.2.")}
    torch.save(sd, tmp_path / "gap.ckpt")
    refused(tmp_path / "gap.ckpt", "block(s) 2")

    sd = original()
    sd["latent_encoder.0.weight"] = torch.zeros(16, 7, 1, 1, 1)  # odd channel count: 2z cannot hold it
    torch.save(sd, tmp_path / "odd.ckpt")
    refused(tmp_path / "odd.ckpt", "latent_encoder.0.weight", "wrong shape")

    sd = original()
    sd["blocks.0.self_attn.q.lora_A.default.weight"] = torch.zeros(64, 32)  # rank 64 > dim 32
    torch.save(sd, tmp_path / "rank.ckpt")
    refused(tmp_path / "rank.ckpt", "rank = 64", "exceeds")

    torch.save({"state_dict": {"a": 1}}, tmp_path / "notensor.ckpt")
    refused(tmp_path / "notensor.ckpt", "not tensors")
    torch.save([1, 2, 3], tmp_path / "list.ckpt")
    refused(tmp_path / "list.ckpt", "does not hold a state dict")


def test_original_legacy_format_still_loads(tmp_path):
    torch.save(original(), tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    assert load_adapter(tmp_path / "legacy.ckpt").spec.num_layers == 2


# --------------------------------------------------------------------------- convert-adapter


def test_convert_adapter_never_overwrites_without_the_flag(tmp_path, capsys):
    export_original_ckpt(random_adapter(SPEC, seed=1), tmp_path / "ex4d.ckpt")
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"the user's own file")
    assert cli("convert-adapter", str(tmp_path / "ex4d.ckpt"), str(out)) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and "Traceback" not in err
    assert out.read_bytes() == b"the user's own file"
    assert cli("convert-adapter", str(tmp_path / "ex4d.ckpt"), str(out), "--overwrite") == 0
    assert load_adapter(out).spec == dataclasses.replace(SPEC, alpha=16.0)  # ex4d.ckpt stores no alpha: 16
    assert cli("convert-adapter", str(out), str(out), "--overwrite") == 2
    assert "same file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex4d.ckpt", "mine.safetensors"]  # no temp files


def test_convert_adapter_bad_outputs_and_inputs(tmp_path, capsys):
    export_original_ckpt(random_adapter(SPEC, seed=1), tmp_path / "ex4d.ckpt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    cases = [((str(tmp_path / "ex4d.ckpt"), str(tmp_path / "folder")), "is a folder"),
             ((str(tmp_path / "ex4d.ckpt"), str(tmp_path / "file" / "a.safetensors")), "not a folder"),
             ((str(tmp_path / "none.ckpt"), str(tmp_path / "b.ckpt")), "does not exist"),
             ((str(tmp_path / "file"), str(tmp_path / "b.ckpt")), "cannot read")]
    for args, words in cases:
        assert cli("convert-adapter", *args) == 2, args
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (args, err)
    big = random_adapter(SPEC, seed=1)
    big.lora["blocks.0.attn1.to_q.lora_A"][0, 0] = 1e6  # beyond float16
    export_original_ckpt(big, tmp_path / "big.ckpt")
    assert cli("convert-adapter", str(tmp_path / "big.ckpt"), str(tmp_path / "h.safetensors"), "--dtype",
               "float16") == 2
    assert "after casting to float16" in capsys.readouterr().err
    assert not (tmp_path / "h.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_convert_adapter_into_a_read_only_folder(tmp_path, capsys):
    export_original_ckpt(random_adapter(SPEC, seed=1), tmp_path / "ex4d.ckpt")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert cli("convert-adapter", str(tmp_path / "ex4d.ckpt"), str(ro / "a.safetensors")) == 2
        err = capsys.readouterr().err
        assert "cannot write" in err and "Traceback" not in err
    finally:
        ro.chmod(0o700)


def test_generate_checks_the_adapter_before_loading_wan(tmp_path, good, monkeypatch):
    import ex4d.diffusion.pipeline as pipeline
    from ex4d.diffusion.config import GenerateConfig

    def no_wan(*a, **k):
        raise AssertionError("Wan was loaded before the adapter was checked")

    monkeypatch.setattr(pipeline, "load_wan", no_wan)
    path = write(tmp_path, good, meta={"alpha": "nan"})
    with pytest.raises(Ex4dError, match="alpha"):
        pipeline.Ex4dGenerator.load(tmp_path, path, GenerateConfig(device="cpu"))
