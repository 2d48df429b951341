#!/usr/bin/env bash
# Runs, on a GPU machine that has python3 with torch but no Rust, the checks of issue 10 from the
# bundle kernel-setup/gpu-bundle.sh built (.gpu/bundle.tar.xz, unpacked to /tmp/sgm-gpu), in the
# repository's root, with data/mnist_5k.csv.gz:
#   tests      every bundled test binary on $SGM_TEST_DEVICE (default cuda);
#   notebooks  every notebook as a program (sgm-notebook) at $SGM_BUDGET (default ci);
#   bench      `sgm bench --compare-pytorch` on the same device as PyTorch;
#   mnist      the mnist preset (its 150 epochs), 1,000 samples, `sgm eval`;
#   fashion    the same for the fashion preset (its 40 epochs; carry data/fashion-mnist);
#   moons      the 2D MLPs trained on CUDA against the same trained on the CPU (the open lead that
#              CUDA-trained 2D networks sample worse): the moons_single and moons presets at
#              training seeds $SGM_GPU_MOONS_SEEDS (default 1 to 4), each trained on both devices
#              and each network sampled and scored (`sgm eval`) on both: moons.jsonl, and the
#              mean energy distance per (training, sampling) device pair as the verdict. Each
#              (preset, seed) is one job, $SGM_GPU_MOONS_JOBS (default 6) at once, each on
#              2 CPU threads (about a minute and a half per job).
# Usage: bash kernel-setup/gpu-check.sh [STAGE...]   (default: tests notebooks)
# Stages run one after another; STAGE+STAGE runs those at once (e.g. `bench tests+notebooks+mnist`:
# the benchmark alone on the GPU, then the rest side by side). $SGM_GPU_DEADLINE (seconds from the
# start, default 570: the device tool stops a command at 600) stops whatever still runs then, so
# a device lease's limit never loses the logs or the verdicts.
# $SGM_GPU_BENCH_SCALE multiplies the benchmark's steps (`sgm bench --scale`, default 5: at 1
# the timed runs are too short on a GPU, and W2's 20 graphed steps give one loss read, too few
# to time). $SGM_GPU_MNIST_EPOCHS overrides the mnist
# preset's epochs; $SGM_GPU_MNIST_CONFIG trains from that
# configuration file (`sgm config mnist`, edited) instead of the preset, and
# $SGM_GPU_MNIST_PATCH (JSON, merged into `sgm config mnist` key by key, e.g.
# '{"train": {"cuda_graph": true}}') edits the preset without a file; likewise
# $SGM_GPU_FASHION_EPOCHS, _CONFIG and _PATCH. $SGM_GPU_SEEDS (default "5") are the
# sampling seeds of the preset stages, each 1,000 samples and one `sgm eval`.
# $SGM_GPU_ONLY="precision cli" runs only those test binaries. Logs and results go to $OUT
# (the device tool's folder) or .gpu/out, each stage's one-line verdict to stdout and summary.txt.
set -uo pipefail
START=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -f .gpu/bundle.tar.xz ] || { echo "no .gpu/bundle.tar.xz here: run kernel-setup/gpu-bundle.sh first and carry .gpu" >&2; exit 2; }
[ -f data/mnist_5k.csv.gz ] || { echo "no data/mnist_5k.csv.gz here: carry data" >&2; exit 2; }
OUT="${OUT:-$ROOT/.gpu/out}"
mkdir -p "$OUT"
B=/tmp/sgm-gpu
rm -rf "$B" && mkdir -p "$B" && tar -xJf .gpu/bundle.tar.xz -C "$B" || { echo "cannot unpack .gpu/bundle.tar.xz" >&2; exit 2; }
TORCH_LIB="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
  echo "python3 has no torch" >&2; exit 2; }
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SGM_DATA="$ROOT/data" SGM_CACHE="${SGM_CACHE:-/tmp/sgm-cache}" SGM_TEST_BINS="$B/bin"
export SGM_OUTPUT="${SGM_OUTPUT:-/tmp/sgm-output}"
export SGM_TEST_DEVICE="${SGM_TEST_DEVICE:-cuda}" SGM_BUDGET="${SGM_BUDGET:-ci}"
DEADLINE_AT=$(( START + ${SGM_GPU_DEADLINE:-570} ))
# timeout(1) for a command, never past the deadline
bounded() {
  local limit=$1 left
  shift
  left=$(( DEADLINE_AT - $(date +%s) ))
  [ "$left" -lt "$limit" ] && limit=$left
  [ "$limit" -gt 0 ] || { echo "deadline reached before: $*"; return 124; }
  timeout "$limit" "$@"
}
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(tests notebooks)
SUMMARY="$OUT/summary.txt"
verdict() { echo "$*" | tee -a "$SUMMARY"; }
: > "$SUMMARY"
verdict "== $(head -1 $B/manifest); torch $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")')"

stage_tests() {
  local log="$OUT/tests.log" name start rc secs failed
  : > "$log"
  for exe in "$B"/tests/*; do
    name="$(basename "$exe")"
    if [ -n "${SGM_GPU_ONLY:-}" ] && [[ " $SGM_GPU_ONLY " != *" $name "* ]]; then continue; fi
    start=$(date +%s)
    echo "==> $name on $SGM_TEST_DEVICE" >> "$log"
    bounded "${SGM_GPU_TEST_TIMEOUT:-600}" "$exe" >> "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
      echo "  $name: ok in ${secs}s ($(grep -o '[0-9]* passed' "$log" | tail -1))" | tee -a "$log"
    else
      echo "  $name: FAILED (exit $rc) in ${secs}s" | tee -a "$log"
    fi
  done
  failed="$(grep '^  [^ ]*: FAILED' "$log" | sed 's/^  //; s/: FAILED.*//' | tr '\n' ' ')"
  if [ -z "$failed" ]; then verdict "tests on $SGM_TEST_DEVICE: all passed"
  else verdict "tests on $SGM_TEST_DEVICE: FAILED $failed(tests.log)"; fi
}

stage_notebooks() {
  local dir=/tmp/sgm-notebooks rc
  rm -rf "$dir"
  SGM_OUTPUT="$dir/output" bounded 100000 "$B/bin/sgm-notebook" run --out "$dir" notebooks/0*.ipynb notebooks/homework/source/*.ipynb > "$OUT/notebooks.log" 2>&1
  rc=$?
  tar -czf "$OUT/notebooks.tar.gz" -C "$dir" --exclude output . 2>/dev/null
  if [ $rc -eq 0 ]; then verdict "notebooks at SGM_BUDGET=$SGM_BUDGET: all ran (notebooks.tar.gz: executed notebooks and figures)"
  else verdict "notebooks at SGM_BUDGET=$SGM_BUDGET: FAILED (exit $rc): $(tail -1 "$OUT/notebooks.log")"; fi
}

stage_bench() {
  bounded 100000 "$B/bin/sgm" bench --compare-pytorch --python python3 --scale "${SGM_GPU_BENCH_SCALE:-5}" > "$OUT/bench.jsonl" 2> "$OUT/bench.log"
  local rc=$?
  if [ $rc -eq 0 ]; then verdict "bench: $(wc -l < "$OUT/bench.jsonl") lines in bench.jsonl"
  else verdict "bench: FAILED (exit $rc): $(tail -1 "$OUT/bench.log")"; fi
}

# patched_config PRESET JSON: the preset's configuration (`sgm config PRESET`) with JSON merged in,
# key by key (objects recursively, anything else replaced), on stdout.
patched_config() {
  "$B/bin/sgm" config "$1" | python3 -c '
import json, sys
def merge(a, b):
    for k, v in b.items():
        a[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return a
print(json.dumps(merge(json.load(sys.stdin), json.loads(sys.argv[1])), indent=1))' "$2"
}

# train_sample_eval NAME: trains preset NAME (or $SGM_GPU_<NAME>_CONFIG, or the preset with
# $SGM_GPU_<NAME>_PATCH merged in, for $SGM_GPU_<NAME>_EPOCHS), then 1,000 samples and `sgm eval`
# for each of $SGM_GPU_SEEDS; the last eval line is the verdict.
train_sample_eval() {
  local name=$1 upper dir log rc config patch epochs source seed
  upper=$(echo "$name" | tr '[:lower:]' '[:upper:]')
  config="SGM_GPU_${upper}_CONFIG" patch="SGM_GPU_${upper}_PATCH" epochs="SGM_GPU_${upper}_EPOCHS"
  dir=/tmp/sgm-$name log="$OUT/$name.log" source=(--preset "$name")
  [ -n "${!config:-}" ] && source=(--config "${!config}")
  rm -rf "$dir"
  (
    if [ -n "${!patch:-}" ]; then
      patched_config "$name" "${!patch}" > "$OUT/$name-config.json" || exit
      source=(--config "$OUT/$name-config.json")
    fi
    bounded 100000 "$B/bin/sgm" train "${source[@]}" ${!epochs:+--epochs ${!epochs}} --out "$dir" || exit
    for seed in ${SGM_GPU_SEEDS:-5}; do
      bounded 100000 "$B/bin/sgm" sample --checkpoint "$dir" --n 1000 --seed "$seed" --out "$dir/s$seed" &&
        bounded 100000 "$B/bin/sgm" eval --checkpoint "$dir" --samples "$dir/s$seed/samples.safetensors" || exit
    done
  ) > "$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then verdict "$name at the GPU sizes: $(tail -1 "$log" | head -c 400)"
  else verdict "$name: FAILED (exit $rc): $(tail -1 "$log")"; fi
}

stage_mnist() { train_sample_eval mnist; }

# moons_job PRESET SEED DIR CKDIR: trains PRESET at training seed SEED on CUDA and on the CPU
# (checkpoints in CKDIR) and scores each network sampled on both (`sgm eval`), one JSON line each
# in DIR/PRESET-SEED.jsonl as it goes; the first failure is the job's last line in
# DIR/PRESET-SEED.log, and its exit status.
moons_job() {
  local preset=$1 seed=$2 dir=$3 ckdir=$4 train on ck base
  base="$dir/$preset-$seed"
  export OMP_NUM_THREADS=2
  patched_config "$preset" "{\"train\": {\"seed\": $seed}}" > "$base.json" 2>> "$base.log" || {
    echo "FAILED configuring $preset seed $seed" >> "$base.log"; return 1; }
  for train in cuda cpu; do
    ck="$ckdir/$preset-$seed-$train"
    SGM_DEVICE=$train bounded 600 "$B/bin/sgm" train --config "$base.json" --out "$ck" >> "$base.log" 2>&1 || {
      echo "FAILED training $preset seed $seed on $train" >> "$base.log"; return 1; }
    for on in cuda cpu; do
      SGM_DEVICE=$on bounded 600 "$B/bin/sgm" eval --checkpoint "$ck" 2>> "$base.log" | tail -n 1 | python3 -c '
import json, sys
m = json.load(sys.stdin)["metrics"]
print(json.dumps({"preset": sys.argv[1], "seed": int(sys.argv[2]), "trained_on": sys.argv[3], "sampled_on": sys.argv[4],
                  "distance": m["energy_distance"]["distance"], "floor": m["energy_distance"]["floor"],
                  "moons": m["mode_weights"]["moons"]}))' "$preset" "$seed" "$train" "$on" >> "$base.jsonl" 2>> "$base.log" || {
        echo "FAILED evaluating $preset seed $seed trained on $train, sampled on $on" >> "$base.log"; return 1; }
    done
  done
}

stage_moons() {
  # Each job's lines and log go to $OUT as they are written (a run killed before the end keeps
  # them); the checkpoints stay out of it.
  local dir="$OUT/moons" ckdir=/tmp/sgm-moons log="$OUT/moons.log" lines="$OUT/moons.jsonl"
  local preset seed failed jobs=${SGM_GPU_MOONS_JOBS:-6}
  [ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
  rm -rf "$dir" "$ckdir" && mkdir -p "$dir" "$ckdir"
  for preset in moons_single moons; do
    for seed in ${SGM_GPU_MOONS_SEEDS:-1 2 3 4}; do
      while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
      moons_job "$preset" "$seed" "$dir" "$ckdir" &
    done
  done
  wait
  cat "$dir"/*.jsonl > "$lines" 2>/dev/null
  cat "$dir"/*.log > "$log" 2>/dev/null
  failed="$(grep -h '^FAILED' "$dir"/*.log 2>/dev/null | sed 's/^FAILED //' | paste -sd ';' -)"
  # Only the (preset, seed) pairs with all four lines are averaged, so that every device pair
  # is compared over the same networks; a failed or cut-short job is named, not averaged.
  verdict "moons, mean energy distance per preset over the seeds with all four lines, trained on / sampled on: $(python3 -c '
import json, sys, collections
by_seed = collections.defaultdict(dict)
for l in open(sys.argv[1]):
    r = json.loads(l); by_seed[(r["preset"], r["seed"])][(r["trained_on"], r["sampled_on"])] = r["distance"]
g = collections.defaultdict(list)
for (p, seed), d in by_seed.items():
    if len(d) == 4:
        for (t, s), v in d.items(): g[(p, t, s)].append(v)
partial = ", ".join(sorted(f"{p} seed {seed}" for (p, seed), d in by_seed.items() if len(d) < 4))
print("; ".join(f"{p} {t}/{s} {sum(v)/len(v):.4f} (n={len(v)}, {min(v):.4f} to {max(v):.4f})" for (p, t, s), v in sorted(g.items())) or "no complete seed",
      end=f"; incomplete: {partial}" if partial else "")' "$lines")${failed:+; FAILED: $failed (moons.log)}"
}

stage_fashion() {
  [ -d data/fashion-mnist ] || { verdict "fashion: FAILED: no data/fashion-mnist here: carry it"; return; }
  train_sample_eval fashion
}

for group in "${STAGES[@]}"; do
  IFS=+ read -r -a together <<< "$group"
  for stage in "${together[@]}"; do
    case "$stage" in
      tests|notebooks|bench|mnist|fashion|moons) ;;
      *) verdict "unknown stage '$stage' (tests, notebooks, bench, mnist, fashion, moons)"; exit 2 ;;
    esac
  done
done
for group in "${STAGES[@]}"; do
  IFS=+ read -r -a together <<< "$group"
  for stage in "${together[@]}"; do
    "stage_$stage" &
  done
  wait
done
verdict "== done in $(( $(date +%s) - START ))s"
grep -q FAILED "$SUMMARY" && exit 1
exit 0
