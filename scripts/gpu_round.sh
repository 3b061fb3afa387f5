#!/usr/bin/env bash
# One round of GPU checks and benchmarks on the GPU machine, from the repository root:
#
#     OUT=/some/folder bash scripts/gpu_round.sh [JOB ...]
#
# JOBs, run in the order given (default: tests backward heal-step host):
#   tests      the GPU tests (pytest -m gpu tests/gpu)
#   backward   forward + backward against SDPA, with each kernel's time (bench_backward.py --profile)
#   tiles      the backward kernels' row chunks, warps and stages (bench_backward_tiles.py; compiles
#              in parallel first)
#   heal-step  a healing step of a BERT-base shape at N = 4096 (batch 1 and 4), 8192 and 16384, with
#              where its host time goes (--host-profile); then N = 4096, batch 1, as heal runs and with
#              every step on one batch (--one-batch: no tokenising beside the steps), SDPA and monarch
#              in turn three times each (--repeat 3: one host's drift hits both alike)
#   host       host time of one eager call (bench_host_time.py)
#   memory     peak memory of one call over the bytes of q, k, v and the output (bench_memory.py)
#   op         the kernel table: every bench_op.py case against SDPA, eager and graph replays
#   short      N = 256 and 512 against SDPA: the default kernel (on-chip at N = 256), the fused and tiled
#              ones, and the on-chip one at 4, 8 and 16 warps (N = 512: b = 23 is too wide for it, these
#              run the default); T = 1 at batch 8-4096, T = 2 at 256 and 1024, a 30%-padded batch
#   models     BERT-base encoder, eager (bench_models.py)
#   compiled   BERT-base encoder, eager and compiled, at batch 1, N = 4096 and batch 8, N = 512
#              (issue 16's compiled cases)
#   ab         another version's kernels (the folder in $OLD, holding its kernels/) against this tree's
#              default and its register caps off, every bench_variants.py case
#              (compare_versions.py)
# Each job writes its log and CSV under $OUT and has its own time limit, so that one stuck job
# cannot take the whole round; DEADLINE=S (seconds from the start, e.g. a device call's limit less a
# margin) shortens the limits so that every job ends by then, and skips those with no time left.
# The last lines of each log are printed at the end. The GPU machine has no network: the package is
# installed from this tree without dependencies. The CSV rows are stamped with BENCH_COMMIT (default:
# git's HEAD there, which lags the tree where the machine got a copy of a working tree with newer
# commits or changes: pass the commit measured).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to a folder for the logs and CSVs}"
mkdir -p "$OUT"
export BENCH_COMMIT=${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)} PYTHONUNBUFFERED=1
python -m pip install -q --no-build-isolation --no-deps --no-index -e . >/dev/null 2>&1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
B=scripts/benchmarks
run() {  # run NAME LIMIT_S COMMAND...: the command's output into $OUT/NAME.log
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    if [ "${DEADLINE:-0}" -gt 0 ] && [ $((DEADLINE - SECONDS)) -lt "$limit" ]; then
        limit=$((DEADLINE - SECONDS))
        if [ "$limit" -lt 20 ]; then echo "$name: skipped, $limit s left before DEADLINE"; return; fi
    fi
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "$name: exit $? in $((SECONDS - start)) s"
}
for job in "${@:-tests backward heal-step host}"; do
    for j in $job; do
        case $j in
        # -P: the repository root off sys.path (README, "Repository layout").
        tests) run tests 300 python -P -m pytest -m gpu tests/gpu -n 8 -q -p no:cacheprovider --tb=short -rf ;;
        backward) run backward 150 python $B/bench_backward.py --profile --steps 1 2 --out "$OUT/backward.csv" ;;
        tiles)
            for k in _r_bwd _l_bwd; do
                timeout 240 python $B/bench_backward_tiles.py --warm-only --kernels $k >"$OUT/warm$k.log" 2>&1 &
            done
            wait
            run tiles 240 python $B/bench_backward_tiles.py --out "$OUT/tiles.csv" ;;
        heal-step) run heal-step 300 python $B/bench_heal_step.py --seqs 4096 8192 16384 --batches 1 4 \
            --max-tokens 16384 --steps 15 --warmup 4 --profile 2 --host-profile 3 --csv "$OUT/heal_step.csv"
            for k in heal one-batch; do
                run heal-$k 120 python $B/bench_heal_step.py --seqs 4096 --steps 30 --warmup 5 --providers sdpa \
                    monarch --repeat 3 --prefetch $k --csv "$OUT/heal_step_$k.csv"
            done ;;
        memory) run memory 120 python $B/bench_memory.py --csv "$OUT/memory.csv" ;;
        op) run op 240 python $B/bench_op.py --no-reference --csv "$OUT/op.csv" ;;
        host) run host 120 python $B/bench_host_time.py --seqs 512 4096 --csv "$OUT/host.csv" ;;
        short) run short 240 python $B/bench_op.py --cases paper-short short-512 T2-short padded-short --no-reference \
            --variants fused tiles onchip-w4 onchip-w8 onchip-w16 --csv "$OUT/short.csv" ;;
        models) run models 300 python $B/bench_models.py --models bert-base --seqs 1024 4096 8192 \
            --csv "$OUT/models.csv" ;;
        compiled) run compiled-b1 150 python $B/bench_models.py --models bert-base --seqs 4096 --compile \
            --csv "$OUT/compiled_b1.csv"
            run compiled-b8 150 python $B/bench_models.py --models bert-base --seqs 512 --batch 8 --compile \
                --csv "$OUT/compiled_b8.csv" ;;
        ab) run ab 240 python $B/compare_versions.py "${OLD:?set OLD to a folder holding the other kernels/}" \
            --variants default nocap --csv "$OUT/ab.csv" ;;
        *) echo "unknown job: $j" >&2; exit 2 ;;
        esac
    done
done
for log in "$OUT"/*.log; do
    echo "== $log"
    grep -v '^    ' "$log" | tail -25
done
