"""``d2c-fast train`` / ``train-oracle`` argument parsing and a tiny CLI run; time budgets."""
import argparse
import json

import pytest

from d2c_fast.errors import ConfigError
from d2c_fast.cli.train import add_parser as add_train
from d2c_fast.cli.evaluation import add_parser as add_eval
from d2c_fast.train.engine import Budget, DistInfo
from d2c_fast.train.testing import tiny_train_dict


def _parser():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    add_train(sub)
    add_eval(sub)
    return ap


def test_cli_train_tiny_and_resume_flag(tmp_path, capsys):
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps(tiny_train_dict(ae_steps=2, diffusion_steps=2)))
    out = tmp_path / "run"
    args = _parser().parse_args(["train", str(cfg), "-o", str(out), "--no-progress"])
    assert args.fn(args) == 0
    assert (out / "model.safetensors").exists() and (out / "train_config.json").exists()
    assert args.fn(args) == 2                                  # exists: needs --resume
    args = _parser().parse_args(["train", str(cfg), "-o", str(out), "--resume",
                                 "--stage", "diffusion", "--max-minutes", "5"])
    assert args.fn(args) == 0                                  # finished stages skipped
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["event"] for r in log].count("export") == 2
    # resuming with other settings is refused before the run's config files are rewritten
    before = {f: (out / f).read_text() for f in ("model_config.json", "train_config.json")}
    for change in ({"seed": 7}, {"model_ch": 64}):
        d = tiny_train_dict(ae_steps=2, diffusion_steps=2)
        if "seed" in change:
            d["seed"] = change["seed"]
        else:
            d["model"]["diffusion"]["model"]["ch"] = change["model_ch"]
        other = tmp_path / "other.json"
        other.write_text(json.dumps(d))
        args = _parser().parse_args(["train", str(other), "-o", str(out), "--resume",
                                     "--no-progress"])
        with pytest.raises(ConfigError, match="other settings .*(seed|model diffusion) differ"):
            args.fn(args)
        assert {f: (out / f).read_text() for f in before} == before
    for bad in ("0", "-1", "nan"):
        args = _parser().parse_args(["train", str(cfg), "-o", str(tmp_path / "b"),
                                     "--max-minutes", bad])
        with pytest.raises(ConfigError, match="max_minutes"):
            args.fn(args)


def test_cli_oracle_args():
    a = _parser().parse_args(["train-oracle", "-o", "o.safetensors", "--epochs", "2"])
    assert a.epochs == 2 and a.resolution == 32 and callable(a.fn)


def _clocked(b, times):
    """Budget ``b`` whose clock reads ``times`` (one value per ``now()`` call)."""
    it = iter(times)
    b.now = lambda: next(it)
    return b


def test_budget_plans_steps_from_measured_speed():
    b = Budget(steps=10000, max_seconds=100.0, calib_steps=20, warm_steps=3)
    assert b.total() == 10000 and b.planned is None
    # 3 warm-up steps take 60 s (a compilation), then 0.5 s per step
    _clocked(b, [60.0, 60.0 + 17 * 0.5])
    for s in range(1, 21):
        b.after_step(s, DistInfo())
        assert (b.planned is None) == (s < 20), s
    # the 28.5 s left of 97 at step 20, at 0.5 s per step: 57 more steps (the first steps'
    # rate, 68.5 s / 20, would have planned 28)
    assert b.planned == 20 + int((0.97 * 100 - 68.5) / 0.5)
    b2 = _clocked(Budget(steps=50, max_seconds=100.0, calib_steps=20), [1.0, 2.0])
    for s in range(1, 21):
        b2.after_step(s, DistInfo())
    assert b2.planned == 50                                    # steps stay the upper bound
    b3 = _clocked(Budget(steps=10000, max_seconds=100.0, calib_steps=20), [1.0, 99.0])
    for s in range(1, 21):
        b3.after_step(s, DistInfo())
    assert b3.planned == 20                                    # out of time: what is done
    assert Budget(steps=7, max_seconds=None).total() == 7


def test_budget_replans_when_the_speed_changes():
    b = Budget(steps=10000, max_seconds=100.0, calib_steps=20, warm_steps=3, replan_seconds=5.0)
    # warm-up ends at 1 s, then 0.1 s per step: the first plan at step 20 (2.7 s), and a
    # re-plan every 5 s of steps at that speed (50 steps)
    # steps 21-70 take 0.2 s each (the machine got slower), steps 71-120 0.05 s each
    t20 = 1.0 + 17 * 0.1
    t70, t120 = t20 + 50 * 0.2, t20 + 50 * 0.2 + 50 * 0.05
    _clocked(b, [1.0, t20, t70, t120])
    for s in range(1, 71):
        b.after_step(s, DistInfo())
        if s == 20:
            assert b.planned == 20 + int((97.0 - t20) / 0.1) and b.replan_every == 50
    assert b.planned == 70 + int((97.0 - t70) / 0.2)     # slower: fewer steps in all
    for s in range(71, 121):
        b.after_step(s, DistInfo())
    assert b.planned == 120 + int((97.0 - t120) / 0.05)  # faster again: more
    # a resumed budget keeps its plan and cadence, and times its next window afresh
    b2 = Budget(steps=10000, max_seconds=100.0, replan_seconds=5.0)
    b2.load_state_dict({"planned": 500, "elapsed": 50.0, "replan_every": 50})
    _clocked(b2, [60.0, 60.0 + 50 * 0.1])
    for s in range(121, 172):
        b2.after_step(s, DistInfo())
    assert b2.planned == 171 + int((97.0 - 65.0) / 0.1)
    # replan_seconds=0 keeps the first plan
    b3 = _clocked(Budget(steps=10000, max_seconds=100.0, replan_seconds=0), [1.0, t20])
    for s in range(1, 200):
        b3.after_step(s, DistInfo())
    assert b3.replan_every == 0 and b3.planned == 20 + int((97.0 - t20) / 0.1)


def test_a_slower_machine_cuts_the_plan_and_says_so(tmp_path):
    """The step plan comes from the first 20 steps and is re-made about once a minute; if
    steps get slower in between, the stage stops at its time budget before the plan and logs
    ``time_budget_cut``."""
    import time

    from d2c_fast.train.engine import StageTrainer
    from d2c_fast.train.config import TrainConfig

    class Slowing(StageTrainer):
        stage = "toy"

        def train_step(self, step):
            time.sleep(0.001 if step < 20 else 0.03)
            return {"loss": 0.0}, 1

        def state_dict(self):
            return {}

        def load_state_dict(self, sd):
            pass

        def finish(self):
            pass

    tc = TrainConfig.from_dict(tiny_train_dict())
    tr = Slowing(tc, str(tmp_path), DistInfo(), steps=100000, max_seconds=0.5)
    tr.run(resume=False)
    assert tr.step < tr.budget.total()
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    cut = [r for r in log if r["event"] == "time_budget_cut"]
    assert len(cut) == 1 and cut[0]["step"] == tr.step and cut[0]["planned"] == tr.budget.total()
    # an unhurried run within its plan logs nothing of the kind
    tr2 = Slowing(tc, str(tmp_path / "b"), DistInfo(), steps=25, max_seconds=60.0)
    (tmp_path / "b").mkdir()
    tr2.run(resume=False)
    assert tr2.step == 25 and not (tmp_path / "b" / "log.jsonl").exists()
