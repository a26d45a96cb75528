"""Time budgets that cannot train a usable model are refused before any work (or warned
about with ``--allow-short``); ``--resume --max-minutes`` continues a finished prior; a
finished run keeps only what continuing it needs; the shipped smoke config is valid."""
import json
import os
import re

import pytest

from d2c_fast.cli import main
from d2c_fast.errors import BudgetError
from d2c_fast.train import TrainConfig, export_run
from d2c_fast.train.budget import (MARGIN, Costs, check_budget, export_reserve,
                                   minimum_seconds)
from d2c_fast.train.engine import load_checkpoint
from d2c_fast.train.testing import tiny_train_dict

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "d2c_fast", "configs")


def _cfg(tmp_path, name="t.json", **kw):
    d = tiny_train_dict(**kw)
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p, d


def _events(run):
    return [json.loads(line) for line in open(run / "log.jsonl")]


def test_minimum_budget_follows_the_pipeline_split():
    tc = TrainConfig.from_dict({"model": "builtin.json", "ae_share": 0.4, "guide_share": 0.1})
    c = Costs(probe_s=2.0, data_s=10.0, latents_s=8.0, ae_steps=300, ae_step_s=0.2,
              prior_steps=300, prior_step_s=0.1, guide_steps=300, guide_step_s=0.01)
    A, L = 300 * 0.2 * MARGIN, 8.0 * MARGIN
    P, G = 300 * 0.1 * MARGIN, 300 * 0.01 * MARGIN
    rest = L + max(P / 0.9, G / 0.1)
    fixed = 2.0 + 10.0 * MARGIN

    def total(work):      # the budget whose part left after the export reserve is `work`
        t = minimum_seconds.__globals__["EXPORT_RESERVE_S"] + work + 100
        for _ in range(200):
            t = work + export_reserve(t)
        return t
    assert minimum_seconds(tc, "all", c, True) == pytest.approx(
        total(max(A / 0.4, rest / 0.6) + fixed))
    assert minimum_seconds(tc, "diffusion", c, True) == pytest.approx(total(rest + fixed))
    assert minimum_seconds(tc, "diffusion", c, False) == pytest.approx(total(L + P + fixed))
    assert minimum_seconds(tc, "ae", c, True) == pytest.approx(total(A + fixed))
    assert [export_reserve(t) for t in (60, 120, 3480)] == [5.0, 6.0, 30.0]
    # refused with the estimate and the smallest budget (rounded up to half a minute)
    need = minimum_seconds(tc, "all", c, True)
    tc.max_minutes = need / 60 - 0.1
    with pytest.raises(BudgetError, match=r"--max-minutes \d+(\.5)? or more.*smoke_train"):
        check_budget(tc, "all", c, True)
    assert "60 autoencoder steps" not in check_budget(tc, "all", c, True, allow_short=True)
    tc.max_minutes = need / 60 + 0.01
    assert check_budget(tc, "all", c, True) is None
    tc.ae.max_minutes = 0.5                       # a stage's own cap below its minimum
    with pytest.raises(BudgetError, match="ae.max_minutes 0.5 cannot reach ae.min_steps"):
        check_budget(tc, "all", c, True)


def test_short_budget_refused_before_any_work_or_warned(tmp_path, capsys):
    cfg, _ = _cfg(tmp_path, ae_steps=200, diffusion_steps=200)
    out = tmp_path / "run"
    # 0.6 s cannot hold 200 + 200 steps and the export (>= 5 s): refused, nothing written
    assert main(["train", str(cfg), "-o", str(out), "--max-minutes", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("d2c-fast: error: a budget of 0.01 min") and "\n" not in err.strip()
    assert re.search(r"at least ([\d.]+) min \(data [\d.]+ s, 200 autoencoder steps x", err)
    assert "give --max-minutes" in err and "smoke_train.json" in err
    assert not out.exists()
    # --allow-short: trains anyway, loudly, and says which stages fell short
    assert main(["train", str(cfg), "-o", str(out), "--max-minutes", "0.01",
                 "--allow-short"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: a budget of 0.01 min" in err
    assert "WARNING: stage ae stopped at step" in err and "below its minimum 200" in err
    ev = _events(out)
    assert [e["event"] for e in ev][:2] == ["estimate", "warning"]
    assert "autoencoder steps" in ev[0]["text"] and (out / "model.safetensors").exists()


def test_resume_of_a_finished_run_continues_the_prior_and_says_so(tmp_path, capsys):
    cfg, d = _cfg(tmp_path, ae_steps=3, diffusion_steps=3)
    d["keep_caches"] = False
    d["data"]["cache"] = True
    cfg.write_text(json.dumps(d))
    out = tmp_path / "run"
    assert main(["train", str(cfg), "-o", str(out)]) == 0
    # what a finished run keeps: no data cache, latents or stage-1 checkpoint
    kept = sorted(os.listdir(out))
    assert not any(f.startswith("data-") for f in kept), kept
    assert "latents.pt" not in kept and "ckpt-ae.pt" not in kept
    assert {"autoencoder.pt", "ckpt-diffusion.pt", "latent-stats.pt",
            "model.safetensors"} <= set(kept)
    pruned = [e for e in _events(out) if e["event"] == "pruned"][-1]
    assert set(pruned["removed"]) == {"latents.pt", "ckpt-ae.pt"} | {
        f for f in pruned["removed"] if f.startswith("data-")} and pruned["mb"] > 0
    assert os.path.exists(export_run(str(out), str(tmp_path / "again.safetensors")))
    # --resume without a budget: nothing to train, and it says how to train more
    capsys.readouterr()
    assert main(["train", str(cfg), "-o", str(out), "--resume"]) == 0
    assert "--resume --max-minutes M" in capsys.readouterr().err
    assert load_checkpoint(out / "ckpt-diffusion.pt")["step"] == 3
    # with a budget (and room in diffusion.steps) the prior trains on from step 3
    d["diffusion"]["steps"] = 6
    cfg.write_text(json.dumps(d))
    assert main(["train", str(cfg), "-o", str(out), "--resume", "--max-minutes", "5"]) == 0
    err = capsys.readouterr().err
    assert "continuing the prior" in err and "event=extend stage=diffusion step=3" in err
    ck = load_checkpoint(out / "ckpt-diffusion.pt")
    assert ck["step"] == 6 and ck["done"]
    assert not (out / "ckpt-ae.pt").exists()       # stage 1 was not retrained
    # at the config's steps: nothing more to do, and the message names the field
    assert main(["train", str(cfg), "-o", str(out), "--resume", "--max-minutes", "5"]) == 0
    assert "train.diffusion.steps (6)" in capsys.readouterr().err
    # a finished stage 1 alone is not continued
    assert main(["train", str(cfg), "-o", str(out), "--resume", "--stage", "ae",
                 "--max-minutes", "5"]) == 2
    assert "stage 1 of" in capsys.readouterr().err


def test_smoke_config_is_valid_and_documented():
    path = os.path.join(CONFIGS, "smoke_train.json")
    tc = TrainConfig.load(path)
    m = tc.model_config()
    assert tc.max_minutes is not None and tc.max_minutes <= 2.5
    assert tc.ae.min_steps > 0 and tc.diffusion.min_steps > 0 and m.resolution == 32
    readme = open(os.path.join(os.path.dirname(CONFIGS), "train", "README.md")).read()
    assert "smoke_train.json" in readme
