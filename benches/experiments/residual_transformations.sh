#!/usr/bin/env bash
# The residual-transformations experiment of the convolution-exponential paper
# at a small scale: Glow's coupling flow, the generalized Sylvester flow and the
# residual flow on MNIST, at matched parameter counts (about 76k: the coupling
# network's 64 hidden channels, the Sylvester conditioner's 30, the residual
# blocks' 57), the same steps and seeds, the rest of `glow-mnist-ref`.
#
#   benches/experiments/residual_transformations.sh DATA_DIR OUT_DIR [STEPS] [SEEDS]
#
# Each run is `cargo xtask train` under `/usr/bin/time -v` (peak resident
# memory); finished runs are kept, so a second call only adds what is missing,
# and a call with more STEPS continues the runs (`--resume`, which continues
# exactly: the table is that of runs of STEPS steps; seconds per step and peak
# memory are those of the last call).
# Writes OUT_DIR/summary.md: test bpd (mean +- sd over seeds), seconds per
# step, peak memory and parameters per model.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:?usage: $0 DATA_DIR OUT_DIR [STEPS] [SEEDS]}
out=${2:?usage: $0 DATA_DIR OUT_DIR [STEPS] [SEEDS]}
steps=${3:-300}
seeds=${4:-"0 1 2"}
cargo build --release -q -p xtask
mkdir -p "$out"
for model in coupling_flow sylvester residual_flow; do
    case $model in
        coupling_flow) width=(--hidden-channels 64) ;;
        sylvester) width=(--hidden-channels 30) ;;
        residual_flow) width=(--n-intermediate-channels 57) ;;
    esac
    for seed in $seeds; do
        dir="$out/$model-seed$seed"
        if [ -f "$dir/checkpoint.safetensors" ]; then
            done_steps=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["steps"])' \
                "$dir/metrics.json" 2>/dev/null || echo 0)
            [ "$done_steps" -ge "$steps" ] && continue
            echo "$model, seed $seed: continued to $steps steps"
            /usr/bin/time -v -o "$dir.time" target/release/xtask train --resume --steps "$steps" \
                --out "$dir" --quiet
            continue
        fi
        echo "$model, seed $seed"
        /usr/bin/time -v -o "$dir.time" target/release/xtask train --preset glow-mnist-ref \
            --model-type "$model" "${width[@]}" --seed "$seed" --steps "$steps" \
            --eval-every "$steps" --samples 0 --data "$data" --out "$dir" --quiet
    done
done
python3 - "$out" <<'PY'
import json, pathlib, re, statistics, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for metrics in sorted(out.glob("*-seed*/metrics.json")):
    model = metrics.parent.name.rsplit("-seed", 1)[0]
    m = json.loads(metrics.read_text())
    time = (metrics.parent.parent / (metrics.parent.name + ".time")).read_text()
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time).group(1))
    rows.setdefault(model, []).append((m["test_bpd"], m["sec_per_step"], rss_kb / 1024, m["parameters"], m["steps"]))
lines = ["| model | parameters | steps | seeds | test bpd (mean +- sd) | s/step | peak memory (MB) |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
for model in ["coupling_flow", "sylvester", "residual_flow"]:
    if model not in rows:
        continue
    r = rows[model]
    bpd = [x[0] for x in r]
    sd = statistics.stdev(bpd) if len(bpd) > 1 else 0.0
    lines.append(f"| {model} | {r[0][3]:,} | {r[0][4]} | {len(r)} | {statistics.mean(bpd):.4f} +- {sd:.4f} "
                 f"| {statistics.mean(x[1] for x in r):.3f} | {max(x[2] for x in r):.0f} |")
table = "\n".join(lines)
(out / "summary.md").write_text(table + "\n")
print(table)
PY
