"""PyTorch twin of flowtrain's `glow-mnist-ref` preset, for timing and bpd comparison.

    /tmp/torchenv/bin/python benches/peers/glow_mnist_ref.py ../shared/data/mnist --steps 300
    python glow_mnist_ref.py mnist --steps 200 --device cuda      # on a GPU (cargo xtask gpu-check)

Same architecture and optimisation as the preset (see README, "glow-mnist-ref"), f32 on the CPU
(or --device); `--mixing 1x1|convexp` picks the mixing layer. Prints the test bpd every --eval-every steps and the seconds per training step
(each step ends with a device synchronisation).
"""
import argparse, gzip, math, os, struct, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    sizes = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(sizes)


class ActNorm(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.b = nn.Parameter(torch.zeros(1, c, 1, 1)); s.logs = nn.Parameter(torch.zeros(1, c, 1, 1)); s.init = False
    def forward(s, x):
        if not s.init:
            with torch.no_grad():
                s.b.data = -x.mean((0, 2, 3), keepdim=True)
                s.logs.data = -torch.log(x.std((0, 2, 3), keepdim=True, unbiased=False) + 1e-6)
            s.init = True
        return (x + s.b) * s.logs.exp(), s.logs.sum() * x.shape[2] * x.shape[3]


class LU1x1(nn.Module):
    def __init__(s, c):
        super().__init__()
        w = torch.linalg.qr(torch.randn(c, c))[0]
        p, l, u = torch.linalg.lu(w)
        s.register_buffer("p", p); s.register_buffer("sign", torch.sign(torch.diag(u)))
        s.register_buffer("lmask", torch.tril(torch.ones(c, c), -1))
        s.l = nn.Parameter(l); s.u = nn.Parameter(torch.triu(u, 1)); s.logs = nn.Parameter(torch.log(torch.abs(torch.diag(u))))
    def forward(s, x):
        c = x.shape[1]
        w = s.p @ (s.l * s.lmask + torch.eye(c)) @ (s.u * s.lmask.T + torch.diag(s.sign * s.logs.exp()))
        return F.conv2d(x, w.view(c, c, 1, 1)), s.logs.sum() * x.shape[2] * x.shape[3]


class ConvExp(nn.Module):
    """LU 1x1, then exp(M_hat) with M_hat the 3x3 same convolution of K / max(1, sigma / 0.95), sigma = ||M u|| for
    the power-iteration vector u (converged at the first use, one step per training forward), then a bias."""
    def __init__(s, c, h, w, terms=6, eval_terms=13, coeff=0.95):
        super().__init__()
        s.lu = LU1x1(c)
        s.kernel = nn.Parameter(torch.randn(c, c, 3, 3) / (9 * c)); s.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        u = torch.randn(1, c, h, w); s.register_buffer("u", u / u.norm())
        s.terms, s.eval_terms, s.coeff, s.converged = terms, eval_terms, coeff, False
    def power_step(s, k):
        v = F.conv2d(s.u, k, padding=1); v = v / v.norm().clamp_min(1e-30)
        u = F.conv_transpose2d(v, k, padding=1); s.u = u / u.norm().clamp_min(1e-30)
    def normalized_kernel(s):
        with torch.no_grad():
            k = s.kernel.detach()
            if not s.converged:
                sigma = 0.0
                for _ in range(500):
                    s.power_step(k); new = F.conv2d(s.u, k, padding=1).norm().item()
                    if abs(new - sigma) <= 1e-10 * abs(new): break
                    sigma = new
                s.converged = True
            elif s.training:
                s.power_step(k)
        sigma = F.conv2d(s.u, s.kernel, padding=1).norm()
        return s.kernel / torch.clamp(sigma / s.coeff, min=1.0)
    def forward(s, x):
        y, ld = s.lu(x)
        k = s.normalized_kernel()
        z, term = y, y
        for i in range(1, (s.terms if s.training else s.eval_terms) + 1):
            term = F.conv2d(term, k, padding=1) / i; z = z + term
        return z + s.bias, ld + torch.diagonal(k[:, :, 1, 1]).sum() * x.shape[2] * x.shape[3]


class ZeroConv(nn.Module):
    def __init__(s, i, o):
        super().__init__()
        s.conv = nn.Conv2d(i, o, 3, padding=1); s.conv.weight.data.zero_(); s.conv.bias.data.zero_()
        s.logs = nn.Parameter(torch.zeros(1, o, 1, 1))
    def forward(s, x):
        return s.conv(x) * (3 * s.logs).exp()


class Coupling(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.c1 = c // 2
        s.net = nn.Sequential(nn.Conv2d(s.c1, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 1), nn.ReLU(), ZeroConv(64, 2 * (c - s.c1)))
    def forward(s, x):
        x1, x2 = x[:, :s.c1], x[:, s.c1:]
        h = s.net(x1); c2 = x2.shape[1]
        shift, raw = h[:, :c2], h[:, c2:]
        scale = torch.sigmoid(raw + 2)
        return torch.cat([x1, (x2 + shift) * scale], 1), torch.log(scale).flatten(1).sum(1)


def squeeze(x):
    n, c, h, w = x.shape
    return x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


LOG2PI = math.log(2 * math.pi)


class Glow(nn.Module):
    def __init__(s, c=1, size=28, levels=2, steps=4, mixing="1x1"):
        super().__init__()
        s.levels = nn.ModuleList(); s.priors = nn.ModuleList()
        for l in range(levels):
            c *= 4; size //= 2
            mix = (lambda: LU1x1(c)) if mixing == "1x1" else (lambda: ConvExp(c, size, size))
            s.levels.append(nn.ModuleList([nn.ModuleList([ActNorm(c), mix(), Coupling(c)]) for _ in range(steps)]))
            if l + 1 < levels:
                s.priors.append(ZeroConv(c // 2, 2 * (c - c // 2))); c = c // 2
    def log_prob(s, x):
        ll = torch.zeros(x.shape[0])
        for l, level in enumerate(s.levels):
            x = squeeze(x)
            for step in level:
                for layer in step:
                    x, ld = layer(x); ll = ll + ld
            if l < len(s.priors):
                c1 = x.shape[1] // 2
                h = s.priors[l](x[:, :c1]); c2 = x.shape[1] - c1
                mean, logs = h[:, :c2], h[:, c2:]
                z2 = x[:, c1:]
                ll = ll + (-0.5 * (LOG2PI + 2 * logs + (z2 - mean) ** 2 * torch.exp(-2 * logs))).flatten(1).sum(1)
                x = x[:, :c1]
        return ll + (-0.5 * (LOG2PI + x ** 2)).flatten(1).sum(1)


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("data"); ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--device", default="cpu")
    ap.add_argument("--eval-every", type=int, default=100); ap.add_argument("--mixing", choices=["1x1", "convexp"], default="1x1")
    a = ap.parse_args()
    torch.set_default_device(a.device)
    sync = torch.cuda.synchronize if torch.device(a.device).type == "cuda" else (lambda: None)
    torch.manual_seed(a.seed); np.random.seed(a.seed); torch.set_num_threads(os.cpu_count())
    f = lambda n: os.path.join(a.data, n)
    train = torch.tensor(idx(f("train-images-idx3-ubyte.gz")), dtype=torch.float32).unsqueeze(1)
    test = torch.tensor(idx(f("t10k-images-idx3-ubyte.gz")), dtype=torch.float32).unsqueeze(1)
    model = Glow(mixing=a.mixing); D = 784
    with torch.no_grad():
        model.log_prob(train[torch.randperm(len(train))[:64]].add(0.5) / 256 - 0.5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order, pos, spent = torch.randperm(len(train)), 0, 0.0
    for step in range(1, a.steps + 1):
        if pos + 64 > len(train):
            order, pos = torch.randperm(len(train)), 0
        x = train[order[pos:pos + 64]]; pos += 64
        t0 = time.perf_counter()
        y = (x + torch.rand_like(x)) / 256 - 0.5
        loss = -(model.log_prob(y) - D * math.log(256)).mean() / (D * math.log(2))
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, step / 100)
        opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(model.parameters(), 50.0); opt.step()
        sync()
        spent += time.perf_counter() - t0
        if step % a.eval_every == 0 or step == a.steps:
            model.train(False)
            with torch.no_grad():
                ll = sum(model.log_prob((b + torch.rand_like(b)) / 256 - 0.5).sum().item() for b in test.split(500))
            model.train(True)
            bpd = -(ll / len(test) - D * math.log(256)) / (D * math.log(2))
            print(f"step {step}: train bpd {loss.item():.4f} test bpd {bpd:.4f} sec/step {spent / step:.4f}", flush=True)


if __name__ == "__main__":
    main()
