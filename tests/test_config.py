import json

import pytest

from mmmixlab.config import RunConfig, preset


def test_presets_and_roundtrip():
    tiny = preset("tiny")
    paper = preset("paper")
    assert tiny.train.encoder == "pointbert-tiny" and paper.train.encoder == "openshape-pointbert"
    assert paper.train.batch_size == 200 and paper.data.num_points == 10000
    again = RunConfig.from_dict(json.loads(tiny.to_json()))
    assert again == tiny


def test_replace_and_unknown_fields():
    cfg = preset("tiny").replace(**{"train.lr": 1e-4, "mix.beta": 0.4})
    assert cfg.train.lr == 1e-4 and cfg.mix.beta == 0.4
    with pytest.raises(ValueError, match="unknown config field"):
        preset("tiny").replace(**{"train.learning_rate": 1.0})
    with pytest.raises(ValueError, match="unknown field"):
        RunConfig.from_dict({"train": {"nope": 1}})
    with pytest.raises(ValueError, match="preset"):
        preset("huge")


@pytest.mark.parametrize("field,value,match", [
    ("train.variant", "mixup", "variant"),
    ("mix.beta", 0.0, "beta"),
    ("mix.mix_prob", 1.5, "mix_prob"),
    ("mix.pairing", "nearest", "pairing"),
    ("data.in_channels", 4, "in_channels"),
    ("train.batch_size", 1, "batch_size"),
    ("mix.modalities", ["audio"], "modalities"),
])
def test_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        preset("tiny").replace(**{field: value}).validate()


@pytest.mark.parametrize("field,value,match", [
    ("train.lr", "abc", r"train\.lr must be a number, got 'abc'"),
    ("train.epochs_stage1", 2.5, r"train\.epochs_stage1 must be an int, got 2\.5"),
    ("train.epochs_stage1", True, r"train\.epochs_stage1 must be an int, got True"),
    ("data.augment", 1, r"data\.augment must be a bool, got 1"),
    ("clip.pretrained", 3, r"clip\.pretrained must be None or a str, got 3"),
    ("train.encoder_overrides", "x", r"train\.encoder_overrides must be a dict"),
])
def test_config_values_are_type_checked(field, value, match):
    with pytest.raises(ValueError, match=match):
        preset("tiny").replace(**{field: value})


def test_cli_set_type_error_is_one_line(capsys):
    from mmmixlab.cli import main

    assert main(["train", "--set", "train.lr=abc", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mmmixlab train: error: train.lr must be a number, got 'abc' (str)"
    ok = preset("tiny").replace(**{"train.lr": 1, "mix.beta": 2})  # ints are numbers
    assert ok.train.lr == 1 and ok.mix.beta == 2


@pytest.mark.parametrize("field", ["train.fused_tokenizer", "train.fused_attention"])
def test_compiled_kernel_switches_are_set_from_the_cli_and_type_checked(field):
    """``--set train.fused_tokenizer=false`` / ``train.fused_attention=false`` reach the run's
    config; a non-bool is refused; they change a run's numbers (float32 rounding), so a resume
    or an ablation's reuse of a finished run notices a change of them."""
    import argparse

    from mmmixlab.cli import build_config
    from mmmixlab.train import RESUME_MAY_CHANGE

    section, key = field.split(".")
    assert getattr(preset("tiny").train, key) is True
    off = build_config(argparse.Namespace(set=[f"{field}=false"]))
    assert getattr(off.train, key) is False
    with pytest.raises(ValueError, match=rf"{section}\.{key} must be a bool"):
        build_config(argparse.Namespace(set=[f"{field}=maybe"]))
    assert field not in RESUME_MAY_CHANGE


def test_share_patches_is_set_from_the_cli_and_type_checked():
    """``--set train.share_patches=false`` reaches the run's config; a non-bool is refused."""
    import argparse

    from mmmixlab.cli import build_config
    from mmmixlab.train import RESUME_MAY_CHANGE

    assert preset("tiny").train.share_patches is True
    off = build_config(argparse.Namespace(set=["train.share_patches=false"]))
    assert off.train.share_patches is False
    with pytest.raises(ValueError, match=r"train\.share_patches must be a bool"):
        build_config(argparse.Namespace(set=["train.share_patches=maybe"]))
    assert "train.share_patches" in RESUME_MAY_CHANGE  # the same numbers either way
