"""Oracle classifier, Frechet distance, Inception interface."""
import numpy as np
import pytest
import torch

from d2c_fast.errors import CheckpointError
from d2c_fast.eval import InceptionFeatures, Oracle, frechet_distance, train_oracle
from d2c_fast.eval.fid import InceptionWeightsError
from d2c_fast.eval.metrics import linear_probe, psnr
from d2c_fast.train.data import SyntheticShapes


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_fd_identical_sets_is_zero():
    f = torch.randn(500, 16, dtype=torch.float64)
    assert abs(frechet_distance(f, f)) < 1e-8


def test_fd_shifted_and_scaled_gaussians_analytic():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 4))
    b = rng.standard_normal((20000, 4)) * 2.0 + np.array([1.0, 0, 0, 2.0])
    # |mu|^2 = 5, covariances I and 4I: tr(I) + tr(4I) - 2 tr(2I) = 4 + 16 - 16 = 4
    assert frechet_distance(a, b) == pytest.approx(9.0, rel=0.03)
    c = rng.standard_normal((20000, 4)) + 3.0
    assert frechet_distance(a, c) == pytest.approx(36.0, rel=0.02)


def test_fd_non_commuting_covariances():
    # analytic check against a direct formula with matrix square roots computed by numpy
    rng = np.random.default_rng(1)
    from d2c_fast.eval.fid import frechet_distance_from_stats, _sqrtm_psd
    A = rng.standard_normal((5, 5)); S1 = A @ A.T + np.eye(5)
    B = rng.standard_normal((5, 5)); S2 = B @ B.T + np.eye(5)
    r1 = _sqrtm_psd(S1)
    assert np.allclose(r1 @ r1, S1)
    # tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)) (real positive eigenvalues)
    ref = np.trace(S1) + np.trace(S2) - 2 * np.sqrt(np.linalg.eigvals(S1 @ S2).real).sum()
    assert frechet_distance_from_stats(np.zeros(5), S1, np.zeros(5), S2) == pytest.approx(ref)


def test_oracle_trains_and_roundtrips(tmp_path):
    tr = SyntheticShapes(384, resolution=16, seed=0)
    va = SyntheticShapes(200, resolution=16, seed=0, split="val")
    m = train_oracle(16, train_data=tr, val_data=va, epochs=4, batch_size=32, width=8,
                     lr=5e-3, progress=False)
    acc = m.metrics["heldout_accuracy"]
    assert len(acc) == 5
    # beats the majority-class rate on average on this easy synthetic task
    labels = torch.stack([va[i][1] for i in range(len(va))])
    chance = torch.maximum(labels.mean(0), 1 - labels.mean(0))
    assert sum(acc.values()) / 5 > float(chance.mean()) + 0.05, (acc, chance)
    x = torch.stack([va[i][0] for i in range(8)])
    p = m.predict(x)
    assert p.shape == (8, 5) and (p >= 0).all() and (p <= 1).all()
    f = m.features(x)
    assert f.shape == (8, m.feature_dim)
    path = tmp_path / "oracle.safetensors"
    m.save(path)
    m2 = Oracle.load(path)
    assert torch.equal(m2.predict(x), p) and m2.metrics == m.metrics
    # other resolutions are resized
    assert m2.predict(torch.nn.functional.interpolate(x, size=32)).shape == (8, 5)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(CheckpointError):
        Oracle.load(bad)


def test_inception_needs_user_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("D2C_FAST_INCEPTION", raising=False)
    with pytest.raises(InceptionWeightsError, match="cannot be downloaded"):
        InceptionFeatures()
    with pytest.raises(InceptionWeightsError, match="not found"):
        InceptionFeatures(tmp_path / "missing.pt")


def test_psnr_and_probe():
    x = torch.rand(4, 3, 8, 8)
    assert torch.isinf(psnr(x, x)).all() or (psnr(x, x) > 150).all()
    assert psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)).item() == \
        pytest.approx(20.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    f = torch.randn(300, 10, generator=g)
    y = (f[:, 0] + 0.1 * torch.randn(300, generator=g) > 0).float()
    assert linear_probe(f[:200], y[:200], f[200:], y[200:]) > 0.9


def test_evaluate_report_smoke(tmp_path):
    from d2c_fast.eval.report import evaluate
    from d2c_fast.train import TrainConfig, train
    from d2c_fast.train.testing import tiny_train_dict
    model = train(TrainConfig.from_dict(tiny_train_dict(ae_steps=2, diffusion_steps=2)),
                  tmp_path / "run")
    o = Oracle(16, width=4)
    o.save(tmp_path / "o.safetensors")
    r = evaluate(model, tmp_path / "o.safetensors", n_heldout=60, n_probe=30, n_samples=8,
                 n_data=40, sample_steps=2, batch_size=30)
    assert set(r["probe"]) == set(r["sample_rates"]) and len(r["probe"]) == 5
    for v in r["sample_rates"].values():   # 8 samples: a wide interval around the rate
        lo, hi = v["samples_ci95"]
        assert 0 <= lo <= v["samples"] <= hi <= 1 and hi - lo > 0.3
        assert abs(v["diff_points"] - 100 * (v["samples"] - v["data"])) < 1e-4
    assert np.isfinite(r["psnr_db"]) and np.isfinite(r["fd_oracle_samples_vs_data"])
