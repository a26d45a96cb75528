"""Model configs: the official YAML layout (and the same layout in JSON) loads; unknown,
missing, mistyped and inconsistent fields are a ConfigError naming the field; every official
``arch_instance`` builds a working model."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from d2c_fast.config import (AutoencoderConfig, ModelConfig, arch_cells, config_from_dict,
                             load_config)
from d2c_fast.errors import ConfigError, D2CError
from d2c_fast.checkpoint.random_init import arch256_config_path, random_model

OFFICIAL_ARCH_INSTANCES = ["res_elu", "res_bnelu", "res_bnswish", "mbconv_sep", "mbconv_sep11",
                           "res_mbconv", "res53_mbconv", "res35_mbconv", "res55_mbconv",
                           "res_mbconv9", "mbconv_res", "mbconv_den"]

# The release's configs/ffhq_256.yml layout: the ARCH-256 model, with the training-only
# sections and data fields of the official files.
FFHQ_256_YML = """\
autoencoder:
    dataset: ffhq_32
    arch_instance: res_mbconv
    num_nf: 0
    num_x_bits: 5
    num_latent_scales: 3
    num_groups_per_scale: 8
    num_latent_per_group: 8
    ada_groups: false
    min_groups_per_scale: 1
    num_channels_enc: 24
    num_preprocess_blocks: 1
    num_preprocess_cells: 2
    num_cell_per_cond_enc: 2
    num_channels_dec: 24
    num_postprocess_blocks: 1
    num_postprocess_cells: 2
    num_cell_per_cond_dec: 2
    use_se: true
    res_dist: true
    moco_dim: 2048
    moco_k: 15000
    moco_m: 0.9999
    moco_t: 0.07
    latent_dim: 32
    resolution: 256
    kl_anneal_portion: 0.3
    kl_const_portion: 0.0001
    kl_const_coeff: 0.0001

diffusion:
    data:
        dataset: "ffhq_moco_32"
        image_size: 32
        channels: 8
        logit_transform: false
        uniform_dequantization: false
        gaussian_dequantization: false
        random_flip: false
        rescaled: false
        num_workers: 4

    model:
        type: "simple"
        in_channels: 8
        out_ch: 8
        ch: 128
        ch_mult: [1, 2, 2, 2, 2]
        num_res_blocks: 2
        attn_resolutions: [16, ]
        dropout: 0.1
        var_type: fixedlarge
        ema_rate: 0.9999
        ema: True
        resamp_with_conv: True

    diffusion:
        beta_schedule: linear
        beta_start: 0.0001
        beta_end: 0.02
        num_diffusion_timesteps: 1000

    training:
        batch_size: 64
        n_epochs: 10000
        n_iters: 5000000
        snapshot_freq: 5000
        validation_freq: 2000

    sampling:
        batch_size: 64
        last_only: True

    optim:
        weight_decay: 0.000
        optimizer: "Adam"
        lr: 0.0002
        beta1: 0.9
        amsgrad: false
        eps: 0.00000001
        grad_clip: 1.0
"""

REQUIRED = {
    "autoencoder": ["dataset", "arch_instance", "num_x_bits", "num_latent_scales",
                    "num_groups_per_scale", "num_latent_per_group", "num_channels_enc",
                    "num_preprocess_blocks", "num_preprocess_cells", "num_cell_per_cond_enc",
                    "num_channels_dec", "num_postprocess_blocks", "num_postprocess_cells",
                    "num_cell_per_cond_dec", "use_se", "latent_dim", "resolution"],
    "diffusion.data": ["image_size", "channels"],
    "diffusion.model": ["in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks",
                        "attn_resolutions", "resamp_with_conv"],
    "diffusion.diffusion": ["beta_schedule", "beta_start", "beta_end", "num_diffusion_timesteps"],
}
OPTIONAL_DEFAULTS = {  # a few training-only fields and their official defaults
    "autoencoder.num_nf": 0, "autoencoder.ada_groups": False,
    "autoencoder.min_groups_per_scale": 1, "autoencoder.res_dist": True,
    "autoencoder.moco_k": 65536, "diffusion.data.logit_transform": False,
    "diffusion.data.dataset": "latent", "diffusion.model.type": "simple",
    "diffusion.model.dropout": 0.0, "diffusion.training.batch_size": 128,
    "diffusion.sampling.last_only": True, "diffusion.optim.optimizer": "Adam",
}


def get(d: dict, dotted: str):
    for k in dotted.split("."):
        d = d[k]
    return d


def put(d: dict, dotted: str, value):
    *parents, last = dotted.split(".")
    for k in parents:
        d = d.setdefault(k, {})
    d[last] = value
    return d


def drop(d: dict, dotted: str):
    *parents, last = dotted.split(".")
    for k in parents:
        d = d[k]
    del d[last]


def config_error(raw, field: str, words=()) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        config_from_dict(raw)
    e = ei.value
    assert e.field == field, f"field {e.field!r}, expected {field!r} ({e})"
    assert field in str(e)
    for w in words:
        assert w.lower() in str(e).lower(), (w, str(e))
    assert isinstance(e, D2CError) and isinstance(e, ValueError)
    return e


def tiny32(arch="res_mbconv", **ae) -> dict:
    """A small config: 32x32 images, 16 channels, 2 scales x 1 group, 8x8x4 latents."""
    cfg = {
        "autoencoder": {
            "dataset": "celeba_64", "arch_instance": arch, "num_x_bits": 5,
            "num_latent_scales": 2, "num_groups_per_scale": 1, "num_latent_per_group": 4,
            "num_channels_enc": 16, "num_preprocess_blocks": 1, "num_preprocess_cells": 2,
            "num_cell_per_cond_enc": 2, "num_channels_dec": 16, "num_postprocess_blocks": 1,
            "num_postprocess_cells": 2, "num_cell_per_cond_dec": 2, "use_se": True,
            "latent_dim": 8, "resolution": 32,
        },
        "diffusion": {
            "data": {"image_size": 8, "channels": 4},
            "model": {"in_channels": 4, "out_ch": 4, "ch": 32, "ch_mult": [1, 2],
                      "num_res_blocks": 1, "attn_resolutions": [4], "resamp_with_conv": True},
            "diffusion": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                          "num_diffusion_timesteps": 1000},
        },
    }
    cfg["autoencoder"].update(ae)
    return cfg


# --------------------------------------------------------------------------------------------
# the official layout loads
# --------------------------------------------------------------------------------------------

def test_fixture_yaml_loads(fixture_dir, make_tiny_config):
    cfg = load_config(fixture_dir / "config.yml")
    assert isinstance(cfg, ModelConfig)
    assert cfg.raw == config_from_dict(make_tiny_config()).raw
    assert cfg.latent_shape == (4, 8, 8) and cfg.resolution == 64
    assert cfg.autoencoder.arch_instance == "res_mbconv" and cfg.autoencoder.num_x_bits == 5
    assert cfg.unet.ch == 32 and cfg.unet.ch_mult == [1, 2] and cfg.unet.attn_resolutions == [4]
    assert cfg.unet.resolution == 8 and cfg.unet.num_timesteps == 1000
    assert cfg.schedule.beta_schedule == "linear" and cfg.schedule.beta_end == 0.02


def test_fixture_meta_json_wrapper_loads(fixture_dir):
    assert load_config(fixture_dir / "meta.json").raw == load_config(fixture_dir / "config.yml").raw


def test_config_wrapper_json_loads(tmp_path, make_tiny_config):
    p = tmp_path / "meta.json"
    p.write_text(json.dumps({"config": make_tiny_config(), "seed": 1, "shapes": {"x": [2, 3]}}))
    assert load_config(p).raw == config_from_dict(make_tiny_config()).raw


def test_release_ffhq_256_yaml_loads(tmp_path):
    p = tmp_path / "ffhq_256.yml"
    p.write_text(FFHQ_256_YML)
    cfg = load_config(p)
    assert cfg.latent_shape == (8, 32, 32) and cfg.resolution == 256
    assert cfg.autoencoder.groups_per_scale() == [8, 8, 8]
    assert cfg.unet.ch_mult == [1, 2, 2, 2, 2] and cfg.unet.attn_resolutions == [16]
    raw = cfg.raw["diffusion"]
    assert raw["training"]["batch_size"] == 64 and raw["training"]["validation_freq"] == 2000
    assert raw["sampling"] == {"batch_size": 64, "last_only": True}
    assert raw["optim"]["eps"] == 1e-8 and raw["optim"]["amsgrad"] is False
    assert raw["data"]["logit_transform"] is False and raw["data"]["num_workers"] == 4
    # the core values are those of the packaged ARCH-256 config
    core = load_config(arch256_config_path()).raw
    assert cfg.raw["autoencoder"] == core["autoencoder"]
    for sec in ("data", "model", "diffusion"):
        assert raw[sec] == core["diffusion"][sec], sec


def test_json_with_the_same_layout_loads(tmp_path):
    raw = yaml.safe_load(FFHQ_256_YML)
    p = tmp_path / "ffhq_256.json"
    p.write_text(json.dumps(raw))
    y = tmp_path / "ffhq_256.yaml"
    y.write_text(FFHQ_256_YML)
    assert load_config(p).raw == load_config(y).raw == load_config(raw).raw


def test_defaults_and_round_trips(tmp_path, make_tiny_config):
    raw = make_tiny_config()
    for dotted in OPTIONAL_DEFAULTS:
        try:
            drop(raw, dotted)
        except KeyError:  # not in the tiny config (training, sampling, optim)
            pass
    cfg = config_from_dict(raw)
    for dotted, default in OPTIONAL_DEFAULTS.items():
        assert get(cfg.raw, dotted) == default, dotted
    assert load_config(cfg) is cfg
    # normalised form round-trips through JSON and through a file
    assert config_from_dict(json.loads(cfg.to_json())).raw == cfg.raw
    p = tmp_path / "cfg.json"
    cfg.save(p)
    assert load_config(p).raw == cfg.raw and load_config(str(p)).raw == cfg.raw
    # ints are accepted for float fields and become floats
    raw = make_tiny_config()
    raw["autoencoder"]["moco_m"] = 1
    raw["diffusion"]["diffusion"]["beta_start"] = 0
    cfg = config_from_dict(raw)
    assert isinstance(cfg.raw["autoencoder"]["moco_m"], float)
    assert isinstance(cfg.schedule.beta_start, float)


# --------------------------------------------------------------------------------------------
# unknown, missing and mistyped fields
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dotted", [
    "bogus", "autoencoder.bogus", "autoencoder.num_channel_enc", "diffusion.bogus",
    "diffusion.model.bogus", "diffusion.model.stack_size", "diffusion.data.bogus",
    "diffusion.diffusion.bogus", "diffusion.training.bogus", "diffusion.sampling.bogus",
    "diffusion.optim.bogus"])
def test_unknown_field_is_refused(dotted, make_tiny_config):
    raw = make_tiny_config()
    put(raw, dotted, 1)
    config_error(raw, dotted, ("unknown",))


def test_unknown_field_in_a_yaml_file_is_refused(tmp_path, make_tiny_config):
    raw = make_tiny_config()
    raw["diffusion"]["model"]["num_heads"] = 4
    p = tmp_path / "c.yml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.field == "diffusion.model.num_heads"


@pytest.mark.parametrize("dotted", [f"{sec}.{k}" for sec, ks in REQUIRED.items() for k in ks]
                         + ["autoencoder", "diffusion", "diffusion.data", "diffusion.model",
                            "diffusion.diffusion"])
def test_missing_required_field_is_refused(dotted, make_tiny_config):
    raw = make_tiny_config()
    drop(raw, dotted)
    config_error(raw, dotted, ("missing",))


@pytest.mark.parametrize("dotted,value", [
    ("autoencoder.num_channels_enc", "8"),           # string for int
    ("autoencoder.num_latent_scales", True),         # bool for int
    ("autoencoder.num_channels_dec", 8.0),           # float for int
    ("autoencoder.use_se", 1),                       # int for bool
    ("autoencoder.ada_groups", "false"),             # string for bool
    ("autoencoder.dataset", 64),                     # int for str
    ("autoencoder.moco_m", [0.999]),                 # list for float
    ("diffusion.data.image_size", "8"),
    ("diffusion.data.channels", None),
    ("diffusion.model.ch", 32.0),
    ("diffusion.model.ch_mult", "12"),               # string for list
    ("diffusion.model.ch_mult", [1, 2.0]),           # float list entry
    ("diffusion.model.ch_mult", [1, True]),          # bool list entry
    ("diffusion.model.attn_resolutions", [4.0]),
    ("diffusion.model.attn_resolutions", 4),
    ("diffusion.model.resamp_with_conv", "yes"),
    ("diffusion.model.dropout", None),
    ("diffusion.diffusion.beta_start", "small"),     # a numeric string ("1e-4") is accepted
    ("diffusion.diffusion.beta_end", True),          # bool for float
    ("diffusion.diffusion.num_diffusion_timesteps", 1000.0),
    ("diffusion.training.batch_size", "64"),
    ("diffusion.sampling.last_only", 1),
    ("diffusion.optim.lr", "fast"),
    ("autoencoder", [1, 2]),                         # a section that is not a mapping
    ("diffusion", "latent"),
    ("diffusion.model", [32]),
    ("diffusion.optim", 3),
])
def test_wrong_type_is_refused(dotted, value, make_tiny_config):
    raw = make_tiny_config()
    put(raw, dotted, value)
    config_error(raw, dotted)


def test_root_that_is_not_a_mapping_is_refused(tmp_path):
    config_error([1, 2], "<root>")
    for name, text in (("empty.yml", ""), ("list.yml", "- 1\n- 2\n")):
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(ConfigError) as ei:
            load_config(p)
        assert ei.value.field == "<root>"


@pytest.mark.parametrize("name,text", [("bad.yml", "autoencoder: [1, 2\n"),
                                       ("bad.json", '{"autoencoder": '),
                                       ("missing.yml", None)])
def test_unreadable_config_file_is_refused(name, text, tmp_path):
    p = tmp_path / name
    if text is not None:
        p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.field == "<file>" and name in str(ei.value)


# --------------------------------------------------------------------------------------------
# inconsistent values
# --------------------------------------------------------------------------------------------

INCONSISTENT = [
    ({"diffusion.data.channels": 8}, "diffusion.data.channels"),
    ({"diffusion.model.in_channels": 8}, "diffusion.model.in_channels"),
    ({"diffusion.model.out_ch": 3}, "diffusion.model.out_ch"),
    ({"diffusion.data.image_size": 16}, "diffusion.data.image_size"),
    ({"autoencoder.latent_dim": 16, "diffusion.data.image_size": 16}, "autoencoder.latent_dim"),
    ({"autoencoder.resolution": 128}, "autoencoder.latent_dim"),
    ({"autoencoder.resolution": 60}, "autoencoder.latent_dim"),
    ({"autoencoder.num_preprocess_blocks": 2}, "autoencoder.latent_dim"),
    ({"autoencoder.num_latent_scales": 2}, "autoencoder.latent_dim"),
    ({"autoencoder.num_postprocess_blocks": 2}, "autoencoder.num_postprocess_blocks"),
    ({"diffusion.model.ch_mult": [1, 2, 2, 2, 2]}, "diffusion.model.ch_mult"),
    ({"diffusion.model.ch_mult": []}, "diffusion.model.ch_mult"),
    ({"diffusion.model.ch_mult": [1, 0]}, "diffusion.model.ch_mult"),
    ({"diffusion.model.ch": 48}, "diffusion.model.ch"),
    ({"diffusion.model.ch": 0}, "diffusion.model.ch"),
    ({"diffusion.model.ch": -32}, "diffusion.model.ch"),
    ({"diffusion.model.num_res_blocks": 0}, "diffusion.model.num_res_blocks"),
    ({"diffusion.model.type": "ncsnpp"}, "diffusion.model.type"),
    ({"diffusion.diffusion.beta_schedule": "cosin"}, "diffusion.diffusion.beta_schedule"),
    ({"diffusion.diffusion.num_diffusion_timesteps": 1},
     "diffusion.diffusion.num_diffusion_timesteps"),
    ({"autoencoder.num_x_bits": 9}, "autoencoder.num_x_bits"),
    ({"autoencoder.num_x_bits": 0}, "autoencoder.num_x_bits"),
    ({"autoencoder.num_nf": 1}, "autoencoder.num_nf"),
    ({"autoencoder.num_channels_enc": 0}, "autoencoder.num_channels_enc"),
    ({"autoencoder.num_cell_per_cond_dec": -1}, "autoencoder.num_cell_per_cond_dec"),
    ({"autoencoder.num_latent_per_group": 0, "diffusion.data.channels": 0,
      "diffusion.model.in_channels": 0, "diffusion.model.out_ch": 0},
     "autoencoder.num_latent_per_group"),
    ({"autoencoder.arch_instance": "res_nope"}, "autoencoder.arch_instance"),
]


@pytest.mark.parametrize("changes,field", INCONSISTENT, ids=[
    ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in c.items()).replace(" ", "")
    for c, _ in INCONSISTENT])
def test_inconsistent_config_is_refused(changes, field, make_tiny_config):
    raw = make_tiny_config()
    for dotted, value in changes.items():
        put(raw, dotted, value)
    config_error(raw, field)


# --------------------------------------------------------------------------------------------
# architectures
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", OFFICIAL_ARCH_INSTANCES)
def test_every_official_arch_instance_builds_and_runs(arch):
    cfg = load_config(tiny32(arch))
    cells = arch_cells(arch)
    assert set(cells) == {"normal_enc", "down_enc", "normal_dec", "up_dec", "normal_pre",
                          "down_pre", "normal_post", "up_post"}
    m = random_model(cfg, seed=0)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = m.autoencoder.encode(x)
        logits = m.autoencoder.decode_logits(z)
    assert z.shape == (2, *cfg.latent_shape) == (2, 4, 8, 8)
    assert logits.shape == (2, 100, 32, 32)
    assert torch.isfinite(z).all() and torch.isfinite(logits).all()


def test_unknown_arch_instance_is_refused():
    with pytest.raises(ConfigError) as ei:
        arch_cells("res_nope")
    assert ei.value.field == "autoencoder.arch_instance" and "res_nope" in str(ei.value)
    config_error(tiny32("mbconv_nope"), "autoencoder.arch_instance", ("unknown",))


def official_groups_per_scale(num_scales, num_groups, is_adaptive, minimum_groups=1):
    """The official rule (NVAE's utils.groups_per_scale, divider 2)."""
    g, n = [], num_groups
    for _ in range(num_scales):
        assert n >= 1
        g.append(n)
        if is_adaptive:
            n = max(minimum_groups, n // 2)
    return g


@pytest.mark.parametrize("scales,groups,ada,min_groups,expected", [
    (3, 8, False, 1, [8, 8, 8]),
    (3, 8, True, 1, [8, 4, 2]),
    (4, 16, True, 1, [16, 8, 4, 2]),
    (5, 8, True, 2, [8, 4, 2, 2, 2]),
    (3, 5, True, 1, [5, 2, 1]),
    (4, 2, True, 1, [2, 1, 1, 1]),
    (2, 1, True, 1, [1, 1]),
])
def test_ada_groups_rule(scales, groups, ada, min_groups, expected, make_tiny_config):
    raw = make_tiny_config()
    raw["autoencoder"].update(num_latent_scales=scales, num_groups_per_scale=groups,
                              ada_groups=ada, min_groups_per_scale=min_groups,
                              resolution=8 * 2 ** scales)  # keeps latent_dim 8 consistent
    ae = config_from_dict(raw).autoencoder
    assert isinstance(ae, AutoencoderConfig)
    assert ae.groups_per_scale() == expected == official_groups_per_scale(
        scales, groups, ada, min_groups)


def test_ada_groups_changes_the_model():
    raw = tiny32(num_latent_scales=3, num_groups_per_scale=4, resolution=64)
    fixed = random_model(raw)
    raw_ada = copy.deepcopy(raw)
    raw_ada["autoencoder"]["ada_groups"] = True
    ada = random_model(raw_ada)
    for m, groups in ((fixed, [4, 4, 4]), (ada, [4, 2, 1])):
        ae, a = m.autoencoder, m.config.autoencoder
        assert a.groups_per_scale() == groups
        # NVAE towers: num_cell_per_cond cells per group, one resampling cell between scales;
        # the decoder's first group has no cells.
        assert len(ae.enc_tower) == sum(groups) * a.num_cell_per_cond_enc + 2
        assert len(ae.dec_tower) == (sum(groups) - 1) * a.num_cell_per_cond_dec + 2
        with torch.no_grad():
            z = ae.encode(torch.rand(1, 3, 64, 64))
            assert z.shape == (1, 4, 8, 8)
            assert ae.decode_logits(z).shape == (1, 100, 64, 64)
    assert sum(p.numel() for p in ada.autoencoder.parameters()) < \
        sum(p.numel() for p in fixed.autoencoder.parameters())


def test_mnist_is_one_channel_with_bernoulli_logits():
    raw = tiny32("res_mbconv", dataset="mnist", num_x_bits=8)
    cfg = load_config(raw)
    assert cfg.autoencoder.image_channels == 1
    m = random_model(cfg)
    with torch.no_grad():
        z = m.autoencoder.encode(torch.rand(2, 1, 32, 32))
        logits = m.autoencoder.decode_logits(z)
    assert z.shape == (2, 4, 8, 8) and logits.shape == (2, 1, 32, 32)
    assert torch.isfinite(logits).all()
    assert load_config(tiny32()).autoencoder.image_channels == 3


def test_yaml_exponent_string_is_a_float(make_tiny_config):
    from d2c_fast.config import config_from_dict
    cfg = make_tiny_config()
    cfg["diffusion"]["diffusion"]["beta_start"] = "1e-4"  # what PyYAML gives for 1e-4
    assert config_from_dict(cfg).schedule.beta_start == 1e-4


@pytest.mark.parametrize("where,value,field", [
    (("diffusion", "diffusion", "beta_end"), 1.5, "diffusion.diffusion.beta_end"),
    (("diffusion", "diffusion", "beta_start"), 0.5, "diffusion.diffusion.beta_end"),
    (("diffusion", "model", "dropout"), 1.0, "diffusion.model.dropout"),
])
def test_value_ranges(make_tiny_config, where, value, field):
    from d2c_fast.config import config_from_dict
    cfg = make_tiny_config()
    d = cfg
    for k in where[:-1]:
        d = d[k]
    d[where[-1]] = value
    with pytest.raises(ConfigError) as e:
        config_from_dict(cfg)
    assert e.value.field == field


def test_vanilla_vae_layout_refused_at_config_time(make_tiny_config):
    from d2c_fast.config import config_from_dict
    cfg = make_tiny_config()
    cfg["autoencoder"].update(num_latent_scales=1, num_groups_per_scale=1, latent_dim=32)
    cfg["diffusion"]["data"]["image_size"] = 32
    with pytest.raises(ConfigError) as e:
        config_from_dict(cfg)
    assert "vanilla" in str(e.value)


def test_load_config_wrapper_dict_and_bad_type(make_tiny_config):
    from d2c_fast.config import load_config
    assert load_config({"config": make_tiny_config()}).latent_shape == (4, 8, 8)
    with pytest.raises(ConfigError):
        load_config(5)


def test_norm_groups_extension(make_tiny_config):
    """``diffusion.model.norm_groups`` (ours, default 32 = the official GroupNorm(32)): sets every
    U-Net GroupNorm; the default is left out of the normalised config, so configs and model
    fingerprints written before the field existed are unchanged."""
    from d2c_fast.models.unet import UNet
    base = make_tiny_config()
    explicit = copy.deepcopy(base)
    explicit["diffusion"]["model"]["norm_groups"] = 32
    assert load_config(explicit).to_json() == load_config(base).to_json()
    assert "norm_groups" not in load_config(explicit).raw["diffusion"]["model"]
    eight = copy.deepcopy(base)
    eight["diffusion"]["model"]["norm_groups"] = 8
    cfg = load_config(eight)
    assert cfg.unet.norm_groups == 8 and cfg.raw["diffusion"]["model"]["norm_groups"] == 8
    assert cfg.to_json() != load_config(base).to_json()
    norms = [m for m in UNet(cfg.unet).modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 8 for m in norms)
    assert load_config(json.loads(cfg.to_json())).unet.norm_groups == 8   # round trip
    for bad in (0, -4, 12):
        d = copy.deepcopy(base)
        d["diffusion"]["model"]["norm_groups"] = bad
        with pytest.raises(ConfigError, match="norm_groups|diffusion.model.ch"):
            load_config(d)
