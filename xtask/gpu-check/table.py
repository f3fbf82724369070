"""The GPU check's table: flowtensor (criterion medians) beside PyTorch, same GPU.

    python3 table.py RESULTS_DIR     # markdown on stdout
"""
import json
import os
import re
import sys


def criterion_ms(root):
    """{group/case: median ms} from criterion's estimates.json files."""
    found = {}
    for dirpath, _, files in os.walk(root):
        if "estimates.json" in files and os.path.basename(dirpath) == "new":
            case_dir = os.path.dirname(dirpath)
            with open(os.path.join(case_dir, "new", "benchmark.json")) as f:
                bench = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
            found[bench["full_id"]] = est["median"]["point_estimate"] / 1e6
    return found


def glow_seconds(results):
    """Seconds per training step of both glow-mnist-ref runs, where they ran."""
    ours = theirs = None
    metrics = os.path.join(results, "glow-mnist-ref", "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics) as f:
            last = json.loads(f.read().strip().splitlines()[-1])
        ours = last["train_seconds"] / last["step"] * 1e3
    torch_log = os.path.join(results, "torch_glow.txt")
    if os.path.exists(torch_log):
        found = re.findall(r"sec/step ([0-9.]+)", open(torch_log).read())
        if found:
            theirs = float(found[-1]) * 1e3
    return ours, theirs


def main():
    results = sys.argv[1]
    gpu = open(os.path.join(results, "gpu.txt")).read().strip() if os.path.exists(
        os.path.join(results, "gpu.txt")) else "unknown GPU"
    ours = criterion_ms(os.path.join(results, "criterion"))
    theirs = json.load(open(os.path.join(results, "torch.json")))
    vector = os.path.join(results, "torch_vector.txt")
    if os.path.exists(vector):
        for line in open(vector):
            if line.startswith("vector_flows/"):
                case, ms = line.split()
                theirs[case] = float(ms)
    glow = glow_seconds(results)
    if glow[0] is not None or glow[1] is not None:
        ours["glow-mnist-ref/train_step"], theirs["glow-mnist-ref/train_step"] = glow
    print(f"GPU: {gpu}\n")
    print("| case | flowtensor (ms) | PyTorch (ms) | ratio |")
    print("|---|---:|---:|---:|")
    worst = 0.0
    for case in sorted(set(ours) | set(theirs)):
        a, b = ours.get(case), theirs.get(case)
        ratio = a / b if a is not None and b else None
        worst = max(worst, ratio or 0.0)
        fmt = lambda v: "-" if v is None else f"{v:.4f}"
        print(f"| {case} | {fmt(a)} | {fmt(b)} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    print(f"\nworst ratio {worst:.2f}x (target: at most 1.0x)")


if __name__ == "__main__":
    main()
