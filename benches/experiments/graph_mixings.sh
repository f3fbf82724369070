#!/usr/bin/env bash
# The graph normalizing-flow experiment of the convolution-exponential paper
# at a small scale: the graph flow of `--preset graph-toy` with no learned
# mixing (`none`: the node features reversed between couplings), a learned
# per-node 1x1 map (`1x1`) and the 1x1 map followed by the graph convolution
# exponential (`convexp`), on built-in graph families, the same steps and seeds.
#
#   benches/experiments/graph_mixings.sh OUT_DIR [DATASETS] [SEEDS] [STEPS]
#
# DATASETS defaults to "rings grids ladders communities", SEEDS to "0 1 2",
# STEPS to the preset's 2000. Finished runs are kept, so a second call only
# adds what is missing. Writes OUT_DIR/summary.md: test NLL per node in nats
# (mean +- sd over seeds), seconds per step and parameters per dataset and
# mixing, and copies each dataset's seed-0 pictures to OUT_DIR/DATASET-MIXING.svg.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: $0 OUT_DIR [DATASETS] [SEEDS] [STEPS]}
datasets=${2:-"rings grids ladders communities"}
seeds=${3:-"0 1 2"}
steps=${4:-2000}
cargo build --release -q -p xtask
mkdir -p "$out"
for dataset in $datasets; do
    for mixing in none 1x1 convexp; do
        for seed in $seeds; do
            dir="$out/$dataset-$mixing-seed$seed"
            [ -f "$dir/metrics.json" ] && continue
            echo "$dataset, $mixing, seed $seed"
            target/release/xtask train --preset graph-toy --graph-dataset "$dataset" \
                --graph-mixing "$mixing" --seed "$seed" --steps "$steps" --out "$dir" --quiet
        done
        [ -f "$out/$dataset-$mixing-seed0/graphs.svg" ] &&
            cp "$out/$dataset-$mixing-seed0/graphs.svg" "$out/$dataset-$mixing.svg"
    done
done
python3 - "$out" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for metrics in sorted(out.glob("*-seed*/metrics.json")):
    m = json.loads(metrics.read_text())
    rows.setdefault((m["dataset"], m["mixing"]), []).append(m)
lines = ["| dataset | mixing | test NLL, nats/node (mean +- sd) | per seed | s/step | parameters |",
         "| --- | --- | --- | --- | --- | --- |"]
order = {"none": 0, "1x1": 1, "convexp": 2}
for (dataset, mixing), runs in sorted(rows.items(), key=lambda r: (r[0][0], order.get(r[0][1], 9))):
    nll = [r["test_nll"] for r in sorted(runs, key=lambda r: r["config"]["seed"])]
    sd = statistics.stdev(nll) if len(nll) > 1 else 0.0
    lines.append(f"| {dataset} | `{mixing}` | {statistics.mean(nll):.3f} +- {sd:.3f} | "
                 + ", ".join(f"{v:.3f}" for v in nll)
                 + f" | {statistics.mean(r['sec_per_step'] for r in runs):.4f} | {runs[0]['parameters']:,} |")
table = "\n".join(lines)
(out / "summary.md").write_text(table + "\n")
print(table)
PY
