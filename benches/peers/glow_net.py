"""PyTorch twin of the `glow_net_fwd` / `glow_net_bwd` groups of `benches/conv.rs`: the convolutions
(with bias) of the glow-mnist-ref coupling networks and split priors, batch 64, f32 on the CPU.

    /tmp/torchenv/bin/python benches/peers/glow_net.py     # one line per case: group/case median_ms
"""
import time

import torch
import torch.nn.functional as F

CASES = [(2, 64, 3, 14), (64, 64, 1, 14), (64, 4, 3, 14), (4, 64, 3, 7), (64, 64, 1, 7), (64, 8, 3, 7),
         (2, 4, 3, 14)]


def median_ms(fn, reps=50, warm=5):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def main():
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; median ms per call")
    rows = []
    for c, o, k, h in CASES:
        name = f"C{c}_O{o}_K{k}_H{h}"
        x = torch.randn(64, c, h, h)
        w = torch.randn(o, c, k, k) / (c * k * k)
        b = torch.randn(o)
        fwd = median_ms(lambda: F.conv2d(x, w, b, padding=k // 2))
        xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))

        def fwdbwd():
            F.conv2d(xg, wg, bg, padding=k // 2).pow(2).sum().backward()

        rows.append((f"glow_net_fwd/{name}", fwd))
        rows.append((f"glow_net_bwd/{name}", median_ms(fwdbwd)))
    for key, ms in sorted(rows):
        print(f"{key} {ms:.4f}")


if __name__ == "__main__":
    main()
