"""PyTorch twin of the `vector_flows` criterion group (benches/vector_flows.rs): forward and backward
of the negative log-likelihood of a batch of 1024, f32, for RealNVP, MAF and NSF-C at D = 2 and 64,
5 layers, conditioners with 2 hidden layers of 64 ReLU units, written as the Rust models are
(alternating masks; MAF orders natural / reversed; log-scale 2 tanh(s / 2); splines with 8 bins on
[-3, 3], minimum width, height and derivative 1e-3, identity tails).

    python benches/peers/vector_flows.py [--threads N] [--device cpu|cuda]   # one line per case: group/case median_ms
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYERS, BATCH, HIDDEN, BINS, BOUND, MIN = 5, 1024, 64, 8, 3.0, 1e-3


def mlp(i, o):
    net = nn.Sequential(nn.Linear(i, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, o))
    with torch.no_grad():  # perturbed zero output layer, as the Rust bench
        net[-1].weight.normal_(0, 0.05)
        net[-1].bias.normal_(0, 0.05)
    return net


def alternating(d, layer):
    m = torch.tensor([(i % 2 == 1) != (layer % 2 == 1) for i in range(d)])
    return m.nonzero().flatten(), (~m).nonzero().flatten()


class Coupling(nn.Module):
    def __init__(s, d, layer, spline):
        super().__init__()
        s.t, s.i = alternating(d, layer)
        s.spline = spline
        per = 3 * BINS - 1 if spline else 2
        s.net = mlp(len(s.i), per * len(s.t))

    def forward(s, x):
        x1, x2 = x[:, s.i], x[:, s.t]
        h = s.net(x1)
        if s.spline:
            z2, ld = rq_spline(x2, h.view(x.shape[0], len(s.t), -1))
        else:
            t, l = h[:, :len(s.t)], 2 * torch.tanh(h[:, len(s.t):] / 2)
            z2, ld = x2 * l.exp() + t, l
        z = torch.empty_like(x)
        z[:, s.i], z[:, s.t] = x1, z2
        return z, ld.sum(1)


class Made(nn.Module):
    def __init__(s, d, reverse, per):
        super().__init__()
        deg_in = torch.arange(1, d + 1) if not reverse else torch.arange(d, 0, -1)
        deg_h = torch.arange(HIDDEN) % max(d - 1, 1) + 1
        s.per, s.d = per, d
        s.l1, s.l2, s.l3 = nn.Linear(d, HIDDEN), nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, d * per)
        with torch.no_grad():
            s.l3.weight.normal_(0, 0.05)
            s.l3.bias.normal_(0, 0.05)
        deg_out = deg_in.repeat_interleave(per)
        s.register_buffer("m1", (deg_h[:, None] >= deg_in[None, :]).float())
        s.register_buffer("m2", (deg_h[:, None] >= deg_h[None, :]).float())
        s.register_buffer("m3", (deg_out[:, None] > deg_h[None, :]).float())

    def forward(s, x):
        h = F.relu(F.linear(x, s.l1.weight * s.m1, s.l1.bias))
        h = F.relu(F.linear(h, s.l2.weight * s.m2, s.l2.bias))
        return F.linear(h, s.l3.weight * s.m3, s.l3.bias).view(x.shape[0], s.d, s.per)


class Maf(nn.Module):
    def __init__(s, d, layer):
        super().__init__()
        s.made = Made(d, layer % 2 == 1, 2)

    def forward(s, x):
        h = s.made(x)
        t, l = h[..., 0], 2 * torch.tanh(h[..., 1] / 2)
        return x * l.exp() + t, l.sum(1)


def knots(u):
    w = MIN + (1 - MIN * BINS) * torch.softmax(u, -1)
    c = F.pad(torch.cumsum(w[..., :-1], -1), (1, 0), value=0.0) * 2 * BOUND - BOUND
    c = F.pad(c, (0, 1), value=BOUND)
    return c, c[..., 1:] - c[..., :-1]


def rq_spline(x, p):
    cw, w = knots(p[..., :BINS])
    ch, h = knots(p[..., BINS:2 * BINS])
    shift = math.log(math.expm1(1 - MIN))
    d = F.pad(MIN + F.softplus(p[..., 2 * BINS:] + shift), (1, 1), value=1.0)
    inside = (x >= -BOUND) & (x <= BOUND)
    v = x.clamp(-BOUND, BOUND)
    k = (torch.searchsorted(cw.detach().contiguous(), v[..., None].detach().contiguous(), right=True) - 1).clamp(0, BINS - 1)
    g = lambda t: t.gather(-1, k)[..., 0]
    xk, yk, wk, hk, dk, dk1 = g(cw[..., :-1]), g(ch[..., :-1]), g(w), g(h), g(d[..., :-1]), g(d[..., 1:])
    s = hk / wk
    th = ((v - xk) / wk).clamp(0, 1)
    t1 = th * (1 - th)
    den = s + (dk1 + dk - 2 * s) * t1
    y = yk + hk * (s * th ** 2 + dk * t1) / den
    ld = torch.log(s ** 2 * (dk1 * th ** 2 + 2 * s * t1 + dk * (1 - th) ** 2)) - 2 * torch.log(den)
    return torch.where(inside, y, x), torch.where(inside, ld, torch.zeros_like(ld))


class Model(nn.Module):
    def __init__(s, kind, d):
        super().__init__()
        make = {"realnvp": lambda l: Coupling(d, l, False), "maf": lambda l: Maf(d, l),
                "nsf_c": lambda l: Coupling(d, l, True)}[kind]
        s.layers = nn.ModuleList([make(l) for l in range(LAYERS)])

    def log_prob(s, x):
        ld = torch.zeros(x.shape[0], device=x.device)
        for layer in s.layers:
            x, l = layer(x)
            ld = ld + l
        return ld - 0.5 * (x ** 2 + math.log(2 * math.pi)).sum(1)


def median_ms(fn, sync, reps=30, warm=5):
    for _ in range(warm):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; median ms per call")
    for d in (2, 64):
        for kind in ("realnvp", "maf", "nsf_c"):
            model = Model(kind, d).to(dev)
            x = torch.randn(BATCH, d, device=dev)

            def step():
                model.zero_grad(set_to_none=True)
                (-model.log_prob(x).mean()).backward()

            print(f"vector_flows/{kind}_D{d} {median_ms(step, sync):.4f}")


if __name__ == "__main__":
    main()
