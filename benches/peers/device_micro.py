"""PyTorch twin of the criterion groups `cargo xtask gpu-check` times on a device:
`conv2d_fwd/*`, `convexp_fwd/*`, `convexp_fwdbwd/*` (benches/conv_exp) and `glow_net_fwd/*`,
`glow_net_bwd/*` (benches/conv.rs), f32, with the same shapes and inputs' scales.

    python device_micro.py --device cuda     # JSON: {"group/case": median ms, ...}

Each timed call ends with a device synchronisation, as the Rust benches' iterations do.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

SHAPES = [(64, 12, 16), (64, 48, 8), (16, 12, 32)]  # benches/conv.rs, benches/conv_exp
GLOW_NET = [(2, 64, 3, 14), (64, 64, 1, 14), (64, 4, 3, 14), (4, 64, 3, 7), (64, 64, 1, 7), (64, 8, 3, 7),
            (2, 4, 3, 14)]


def median_ms(fn, sync, reps=50, warm=5):
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


def conv_exp(x, k, terms):
    result, product = x, x
    for i in range(1, terms + 1):
        product = F.conv2d(product, k, padding=1) / i
        result = result + product
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    out = {}
    for n, c, h in SHAPES:
        name = f"B{n}_C{c}_H{h}"
        x = torch.randn(n, c, h, h, device=dev)
        k = torch.randn(c, c, 3, 3, device=dev) / (c * 9)
        out[f"conv2d_fwd/{name}"] = median_ms(lambda: F.conv2d(x, k, padding=1), sync)
        for terms in (6, 10):
            out[f"convexp_fwd/{name}_T{terms}"] = median_ms(lambda: conv_exp(x, k, terms), sync)
        if name == "B64_C12_H16":
            xg, kg = x.clone().requires_grad_(True), k.clone().requires_grad_(True)
            out[f"convexp_fwdbwd/{name}_T6"] = median_ms(
                lambda: conv_exp(xg, kg, 6).pow(2).sum().backward(), sync)
    for c, o, k, h in GLOW_NET:
        name = f"C{c}_O{o}_K{k}_H{h}"
        x = torch.randn(64, c, h, h, device=dev)
        w = torch.randn(o, c, k, k, device=dev) / (c * k * k)
        b = torch.randn(o, device=dev)
        out[f"glow_net_fwd/{name}"] = median_ms(lambda: F.conv2d(x, w, b, padding=k // 2), sync)
        xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))
        out[f"glow_net_bwd/{name}"] = median_ms(
            lambda: F.conv2d(xg, wg, bg, padding=k // 2).pow(2).sum().backward(), sync)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
