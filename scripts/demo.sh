#!/usr/bin/env bash
# Sets everything up and runs the main job: the staged pipeline of configs/pipeline-demo.textproto
# on 2 ranks under mpirun: PS3 pre-training on synthetic 4K images -> VILA-HD alignment -> VILA-HD
# SFT -> the multiple-choice evaluation on held-out 4K images. The dataset (data/synth_pipeline)
# and its tokenizer are generated when absent; metrics on 127.0.0.1:9470/9471 (label `stage`);
# every stage's checkpoints in runs/pipeline-demo/stages/. It ends with the evaluation table
# (low-res only, bottom-up and top-down selection, 756 / 1512 / 3780 at the same token budget)
# and writes runs/pipeline-demo/eval.json and eval.png.
# Running it again resumes in the stage and at the step where it stopped (a finished run prints
# its table again); delete runs/pipeline-demo to start over. Extra arguments go to `hdtrain run`
# (e.g. --set stages.2.steps=400). The PS3-only demo of earlier versions:
#   scripts/hdrun --local -np 2 build/launcher/hdtrain pretrain --config configs/demo.textproto
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
build="${HD_BUILD_DIR:-$root/build}"
cd "$root"
# --bind-to none: OpenMPI binds each rank to one core at np <= 2 (docs/parallel.md).
# scripts/hdrun is mpirun with Ctrl-C / SIGTERM turned into an at-once stop: every rank
# checkpoints at the next step and exits 0 (docs/training.md, "Signals"); --local keeps MPI on
# shared memory and the loopback (docs/training.md, "Network").
mpirun_args=(--oversubscribe --bind-to none -np 2)
if [ "$(id -u)" = 0 ]; then mpirun_args=(--allow-run-as-root "${mpirun_args[@]}"); fi
# The ranks' stdout is OpenMPI's pseudo-terminal even when ours is a file: tell them which it is.
if [ -t 1 ]; then export HD_PROGRESS=terminal; else export HD_PROGRESS=plain; fi
start=$(date +%s)
# One compute thread per rank: 2 ranks on a 2-core machine.
HD_NUM_THREADS="${HD_NUM_THREADS:-1}" \
  "$root/scripts/hdrun" --local "${mpirun_args[@]}" "$build/launcher/hdtrain" run \
  --config configs/pipeline-demo.textproto "$@"
# The run folder as the config resolves it (a --set run_dir=... among the arguments moves it).
run_dir=$("$build/launcher/hdtrain" run --config configs/pipeline-demo.textproto "$@" \
  --print-config 2>/dev/null | sed -n 's/^run_dir: "\(.*\)"$/\1/p' || true)
echo "demo: $(( $(date +%s) - start )) s (stages, checkpoints and the evaluation in ${run_dir:-runs/pipeline-demo}/)"
