"""Positive-unlabelled (PU) fitting: the fraction of positives among the unlabelled items, and
the calibration of a score to the population posterior (case-control PU)."""
from __future__ import annotations

import math

import torch

__all__ = ["mixture_proportion", "pu_calibrate"]


def mixture_proportion(sp: torch.Tensor, su: torch.Tensor, delta: float = 0.1,
                        gamma: float = 0.01) -> float:
    """Fraction of positives in the unlabelled set from 1-D scores, by best-bin estimation
    (BBE; Garg, Wu, Smola, Balakrishnan & Lipton 2021). For every threshold ``t``,
    ``q_U(t) / q_P(t)`` (``q`` = fraction of scores ``>= t``) bounds the proportion from
    above (Blanchard, Lee & Scott 2010); the plain minimum over ``t`` is biased low, since it
    picks the threshold whose ratio the sampling noise pushed down the most. BBE picks the
    threshold that minimises the ratio's upper confidence bound, ``q_U / q_P + (1 + gamma)
    eps / q_P`` with ``eps = sqrt(log(4 / delta) / 2 n_P) + sqrt(log(4 / delta) / 2 n_U)``
    (DKW), and returns the ratio there. On the built-in model (100 positives, 500
    unlabelled, 5 draws each of blond / lipstick / beard) it cut the mean absolute error of
    the prior from 0.051 to 0.021 and lifted the positive-only held-out balanced accuracy by
    12 / 3 / 3 points on average (docs/quality/README.md)."""
    sp, su = sp.double().flatten(), su.double().flatten()
    if sp.numel() < 1 or su.numel() < 1:
        raise ValueError("mixture proportion needs positive and unlabelled scores")
    t = sp.sort().values                              # candidate thresholds: positive scores
    qp = (sp[None, :] >= t[:, None]).double().mean(1)
    qu = (su[None, :] >= t[:, None]).double().mean(1)
    eps = math.sqrt(math.log(4.0 / delta) / (2 * sp.numel())) \
        + math.sqrt(math.log(4.0 / delta) / (2 * su.numel()))
    i = int((qu / qp + (1.0 + gamma) * eps / qp).argmin())
    return min(max(float(qu[i] / qp[i]), 0.005), 0.995)


def pu_calibrate(sp: torch.Tensor, su: torch.Tensor, prior: float, iters: int = 200):
    """``(a, c)`` with ``p(y=1 | s) = sigmoid(a s + c)`` for 1-D scores of labelled positives
    ``sp`` and unlabelled ``su`` (case-control PU): under ``f_U = prior f_P + (1 - prior) f_N``
    the odds of "labelled" given ``s`` are ``n_P p(s) / (n_U prior)``; maximise that
    likelihood (L-BFGS, ``a = exp(.)`` > 0) with Platt's smoothed targets."""
    sp, su = sp.double(), su.double()
    log_k = math.log(sp.numel() / (su.numel() * prior))
    la = torch.zeros((), dtype=torch.float64, requires_grad=True)
    c = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([la, c], max_iter=iters, line_search_fn="strong_wolfe")
    n = sp.numel() + su.numel()
    t_p, t_u = (sp.numel() + 1.0) / (sp.numel() + 2.0), 1.0 / (su.numel() + 2.0)

    def closure():
        opt.zero_grad()
        a = la.exp()
        lr_p = log_k + torch.nn.functional.logsigmoid(a * sp + c)   # log odds of "labelled"
        lr_u = log_k + torch.nn.functional.logsigmoid(a * su + c)
        # log g and log(1 - g) of "labelled", with Platt's smoothed targets (they keep the
        # scale finite when the positives in U are ranked perfectly)
        lg_p, l1g_p = lr_p - torch.logaddexp(torch.zeros_like(lr_p), lr_p), \
            -torch.logaddexp(torch.zeros_like(lr_p), lr_p)
        lg_u, l1g_u = lr_u - torch.logaddexp(torch.zeros_like(lr_u), lr_u), \
            -torch.logaddexp(torch.zeros_like(lr_u), lr_u)
        nll = -(t_p * lg_p + (1 - t_p) * l1g_p).sum() - (t_u * lg_u + (1 - t_u) * l1g_u).sum()
        loss = nll / n + 1e-6 * (la.square() + c.square())
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(la.detach().exp()), float(c.detach())
