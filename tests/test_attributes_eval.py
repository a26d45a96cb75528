"""The attribute evaluation end to end on a tiny random model and an untrained oracle (tiny
sizes): it runs and writes well-formed outputs."""
import json
import os

import pytest
import torch

from d2c_fast import Sampler
from d2c_fast.data import ATTRIBUTES
from d2c_fast.eval.attributes_eval import evaluate_attributes
from d2c_fast.eval.metrics import rel_error, wilson_interval
from d2c_fast.eval.oracle import Oracle
from d2c_fast.checkpoint.random_init import random_model

CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "d2c_fast", "configs", "tiny64.json")


def test_eval_attributes_tiny(tmp_path):
    torch.set_num_threads(1)
    s = Sampler(random_model(CFG, seed=3))
    torch.manual_seed(0)
    oracle = Oracle(resolution=32, width=8).eval()
    r = evaluate_attributes(s, oracle, attributes=("blond_hair", "beard"), n_fit=8,
                            n_unlabelled=12, n_eval=5, n_real=5, strength_factors=(1.0, 2.0),
                            target_offsets=(0.0,),
                            n_cond=3, n_naive=4, cond_skip=500, ddim_skip=500,
                            cond_adapt_prior=16,
                            projector_steps=3, latency_repeats=1, batch_size=4,
                            out_dir=tmp_path, progress=False, grid_n=3,
                            projector_model=Sampler(random_model(CFG, seed=3), impl="ref"),
                            n_population=40)
    assert set(r["attributes"]) == {"blond_hair", "beard"}
    for name, a in r["attributes"].items():
        assert set(a["fit"]) == {"labelled", "positive_only"}
        for fr in a["fit"].values():
            assert 0 <= fr["cv_accuracy"] <= 1 and 0 <= fr["heldout_balanced_accuracy"] <= 1
            assert 0 < fr["prior"] < 1
        methods = {(e["fit"], e["method"]) for e in a["edits"]} - {("none", "reconstruction")}
        assert methods == {("labelled", "d2c"), ("labelled", "nvae"), ("labelled", "ddim"),
                           ("positive_only", "d2c"), ("labelled+preserve", "d2c")}
        # 5 (fit, method) pairs x (2 strengths + 1 per-image target) + the reconstruction
        assert len(a["edits"]) == 5 * 3 + 1 and a["edits"][0]["method"] == "reconstruction"
        tgt = [e for e in a["edits"] if e["target"] is not None]
        assert len(tgt) == 5
        for e in tgt:   # targets >= 0 only ever add, targets < 0 only ever remove
            assert e["factor"] is not None
            assert e["strength"] >= 0 if e["target"] >= 0 else e["strength"] <= 0, e
        for e in a["edits"]:
            assert 0 <= e["success"] <= 1 and 0 <= e["preservation"] <= 1
            by = e["preservation_by_attribute"]
            assert set(by) == set(ATTRIBUTES) - {name}
            # the overall preservation is the mean over the other attributes
            assert abs(sum(by.values()) / len(by) - e["preservation"]) < 1e-6
            assert e["identity"] >= 0 and e["identity_rel"] >= 0
        c = a["conditional"]
        assert 0 <= c["naive_precision"] <= 1
        if "adapted_error" not in c:   # the re-based rule reports the pilot's rate
            assert 0 < c["adapted_prior"] < 1
        for k in ("", "threshold_", "adapted_"):
            if k + "error" not in c:
                assert 0 <= c[k + "precision"] <= 1 and 0 < c[k + "acceptance_rate"] <= 1
                lo, hi = c[k + "precision_ci95"]
                assert 0 <= lo <= c[k + "precision"] <= hi <= 1 and hi - lo > 0.1   # 3 samples
                assert c[k + "fd_oracle"] is not None and c[k + "fd_oracle"] > -1e-6
        assert c["threshold"] == 0.9
        # the rules on real latents (a perfect prior): a precision, or None when no real
        # latent reaches the threshold
        assert 0 <= c["real_latent_precision"] <= 1
        t = c["threshold_real_latent_precision"]
        assert t is None or 0 <= t <= 1
        if "threshold_error" not in c:
            assert c["threshold_mean_classifier_probability"] >= 0.9
        assert set(a["at_preservation_95"]) == {f"{f}/{m}" for f, m in methods} | \
            {f"{f}/{m}/target" for f, m in methods}
    # the threshold rule ran to the end for at least one attribute (the checks above bit)
    assert any("threshold_precision" in a["conditional"] for a in r["attributes"].values())
    lt = r["latency"]
    assert lt["edit_d2c_s"] > 0 and lt["projector_s"] > 0 and lt["ratio"] > 0
    files = r["files"]
    for k in ("edits_grid", "conditional_grid", "json", "markdown"):
        assert os.path.isfile(files[k]), k
    with open(files["json"]) as f:
        assert json.load(f)["fingerprint"] == s.fingerprint
    md = open(files["markdown"]).read()
    assert "| blond_hair | labelled | d2c |" in md and "Latency" in md
    assert "precision with real latents" in md
    from PIL import Image
    im = Image.open(files["edits_grid"])
    # per attribute: originals, d2c, nvae, ddim, d2c with a per-image target,
    # positive-only d2c, d2c + preserve
    assert im.size[1] == 2 * 7 * (64 + 2) + 2


def test_wilson_interval_solves_its_defining_equation():
    """The bounds are the p0 where |k/n - p0| = z sqrt(p0 (1 - p0) / n) (checked by
    substitution, not by the closed form), clipped to [0, 1] at k = 0 and k = n."""
    import math
    for k, n in ((77, 100), (3, 10), (50, 400)):
        lo, hi = wilson_interval(k, n)
        for p0 in (lo, hi):
            assert abs(abs(k / n - p0) - 1.96 * math.sqrt(p0 * (1 - p0) / n)) < 1e-9
        assert lo < k / n < hi
    lo, hi = wilson_interval(0, 20)
    assert lo == 0 and 0 < hi < 0.2
    lo, hi = wilson_interval(20, 20)
    assert hi == 1 and 0.8 < lo < 1
    assert wilson_interval(77, 100)[1] - wilson_interval(77, 100)[0] > \
        wilson_interval(308, 400)[1] - wilson_interval(308, 400)[0]   # shrinks with n


def test_rel_error():
    """||a - b|| / ||b|| over all elements, in float64 (a float32 difference below float32's
    resolution of b still counts), any shape and input type; b = 0 and shape mismatches."""
    b = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert rel_error(b + torch.tensor([[0.0, 1.0], [0.0, 0.0]]), b) == 0.2     # 1 / 5
    x = torch.tensor([1.0], dtype=torch.float32)
    y = torch.tensor([1.0 + 1e-9], dtype=torch.float64)
    assert 0 < rel_error(y, x) < 2e-9
    assert rel_error([3.0, 4.0], (3.0, 4.0)) == 0.0
    assert rel_error(torch.zeros(2), torch.zeros(2)) == 0.0
    assert rel_error(torch.ones(2), torch.zeros(2)) == float("inf")
    with pytest.raises(ValueError, match="shapes"):
        rel_error(torch.zeros(2, 3), torch.zeros(3, 2))



def test_eval_attributes_scores_the_local_edit(tmp_path):
    """The default edit (method "local") is scored like the others, with its own t0/skip."""
    torch.set_num_threads(1)
    s = Sampler(random_model(CFG, seed=3))
    torch.manual_seed(0)
    oracle = Oracle(resolution=32, width=8).eval()
    r = evaluate_attributes(s, oracle, attributes=("beard",), n_fit=8, n_unlabelled=12,
                            n_eval=4, n_real=4, strength_factors=(1.0,), target_offsets=(),
                            methods=("local",), n_cond=0, n_naive=4, cond_adapt_prior=0,
                            projector_steps=0, latency_repeats=1, batch_size=4,
                            out_dir=tmp_path, progress=False, grid_n=2, n_population=0,
                            positive_only=False, preserve_others=False)
    edits = [e for e in r["attributes"]["beard"]["edits"] if e["method"] == "local"]
    assert edits and all(0 <= e["success"] <= 1 for e in edits)
