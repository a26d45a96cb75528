"""``output_type="pt" | "np" | "pil"`` on every image-returning Sampler call (diffusers'
convention), numpy / PIL inputs, and sample_conditional's return value and its deprecation."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from d2c_fast import Attribute, Sampler
from d2c_fast.attributes import LinearClassifier
from d2c_fast.checkpoint.random_init import random_model
from d2c_fast.images import OUTPUT_TYPES, to_output, to_pil
from d2c_fast.train.testing import tiny_model_dict


@pytest.fixture(scope="module")
def s():
    torch.set_num_threads(1)
    return Sampler(random_model(tiny_model_dict(16), seed=1))


def _const_attr(s, p=0.9):
    D = int(torch.tensor(s.latent_shape).prod())
    clf = LinearClassifier(torch.full((D,), 1e-9, dtype=torch.float64), 0.0, s.mean, s.std,
                           prior=p)
    return Attribute(torch.randn(s.latent_shape, generator=torch.Generator().manual_seed(0)),
                     name="c", classifier=clf, fingerprint=s.fingerprint,
                     latent_shape=s.latent_shape)


def _check_forms(pt, np_, pil, n, res):
    assert isinstance(pt, torch.Tensor) and pt.dtype == torch.float32
    assert pt.shape == (n, 3, res, res) and 0 <= float(pt.min()) and float(pt.max()) <= 1
    assert isinstance(np_, np.ndarray) and np_.dtype == np.float32 and np_.shape == (n, res, res, 3)
    np.testing.assert_array_equal(np_, pt.permute(0, 2, 3, 1).numpy())
    assert isinstance(pil, list) and len(pil) == n
    assert all(isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (res, res)
               for im in pil)
    for a, b in zip(pil, to_pil(pt)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_to_output_forms_and_bad_names():
    x = torch.rand(2, 3, 5, 4)
    assert to_output(x, "pt") is x
    assert to_output(x, "np").shape == (2, 5, 4, 3)
    assert [im.size for im in to_output(x, "pil")] == [(4, 5), (4, 5)]
    assert OUTPUT_TYPES == ("pt", "np", "pil")
    for bad in ("numpy", "PIL", None, 1):
        with pytest.raises(ValueError, match="output_type must be one of 'pt', 'np', 'pil'"):
            to_output(x, bad)


def test_sample_decode_manipulate_take_output_type(s):
    r = s.resolution
    forms = [s.sample(2, skip=500, seed=0, mode="mode", output_type=t) for t in OUTPUT_TYPES]
    _check_forms(*forms, 2, r)
    z = s.sample_latents(2, skip=500, seed=0)
    forms = [s.decode(z, mode="mode", output_type=t) for t in OUTPUT_TYPES]
    _check_forms(*forms, 2, r)
    # numpy latents are accepted where a tensor is
    assert torch.equal(s.decode(z.numpy(), mode="mode"), forms[0])
    # image inputs as PIL images and numpy arrays give the edit of the same tensor
    a = _const_attr(s)
    x = forms[0]
    want = s.manipulate(x, a, step=1.0, seed=0, mode="mode", guidance=1)
    pil_in = to_pil(x)
    np_in = [np.array(im) for im in pil_in]
    x8 = torch.stack([torch.from_numpy(v).permute(2, 0, 1) for v in np_in]).float() / 255
    want8 = s.manipulate(x8, a, step=1.0, seed=0, mode="mode", guidance=1)
    for inp in (pil_in, np_in, np.stack(np_in)):
        got = s.manipulate(inp, a, step=1.0, seed=0, mode="mode", guidance=1)
        assert torch.equal(got, want8)
    forms = [s.manipulate(x, a, step=1.0, seed=0, mode="mode", guidance=1, output_type=t)
             for t in OUTPUT_TYPES]
    _check_forms(*forms, 2, r)
    assert torch.equal(forms[0], want)
    with pytest.raises(ValueError, match="output_type"):     # refused before the work
        s.sample(1, skip=500, seed=0, output_type="png")


def test_sample_conditional_returns_and_deprecation(s):
    a = _const_attr(s)
    kw = dict(seed=0, skip=500, mode="mode")
    with pytest.warns(FutureWarning, match="return_probs=True to keep the pair") as rec:
        old = s.sample_conditional(a, 2, **kw)
    assert rec[0].filename == __file__               # points at the caller
    x, p = old                                       # the old default: (images, probs)
    assert x.shape == (2, 3, s.resolution, s.resolution) and p.shape == (2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        only = s.sample_conditional(a, 2, return_probs=False, **kw)
        assert isinstance(only, torch.Tensor) and torch.equal(only, x)   # as sample()
        x2, p2 = s.sample_conditional(a, 2, return_probs=True, **kw)
        assert torch.equal(x2, x) and torch.equal(p2, p)
        imgs, st = s.sample_conditional(a, 2, return_probs=False, return_stats=True,
                                        output_type="np", **kw)
        assert imgs.shape == (2, s.resolution, s.resolution, 3) and "draws" in st
        pil = s.sample_conditional(a, 2, return_probs=False, output_type="pil", **kw)
        assert len(pil) == 2 and isinstance(pil[0], Image.Image)


def test_seed_follows_position_as_the_readme_says(s):
    """README: ``seed=s`` gives position ``i`` the seed ``s + i``: the batch size does not
    matter (to float rounding), the position does."""
    x = s.sample(2, skip=500, seed=0, mode="mode")
    a = Attribute(torch.randn(s.latent_shape, generator=torch.Generator().manual_seed(1)))
    ab = s.manipulate(x, a, step=1.0, seed=5)
    torch.testing.assert_close(s.manipulate(x, a, step=1.0, seed=5, batch_size=1), ab,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(s.manipulate(x[1:], a, step=1.0, seed=6)[0], ab[1],
                               atol=1e-5, rtol=0)
    other = s.manipulate(x[1:], a, step=1.0, seed=5)[0]        # b moved to position 0
    assert float((other - ab[1]).abs().mean()) > 0.01
