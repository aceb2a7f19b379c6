#!/usr/bin/env bash
# The second CI leg (.ci/run): Python 3.12 with the newest jax/jaxlib,
# TensorFlow and tfds that setup.py admits (no torch), installed from a
# wheel of this checkout (not editable), then:
#   1. the model and the train step under pmap and shard_map (pytest),
#   2. a Fashion-MNIST run (400 tiny steps) with the installed nfnet-train, SIGKILLed
#      after its first checkpoint and resumed to the end,
#   3. nfnet-evaluate of that workdir, nfnet-export of it (StableHLO and
#      SavedModel).
# A few minutes on 2 CPU cores. Usage: bash scripts/ci_newest_jax.sh
# (PY312=/path/to/python3.12, VENV312=/path/to/venv override the defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py=${PY312:-}
if [ -z "$py" ]; then
  if command -v pyenv >/dev/null 2>&1 && [ -x "$(pyenv root)/versions/3.12.1/bin/python3.12" ]; then
    py="$(pyenv root)/versions/3.12.1/bin/python3.12"
  else
    py=python3.12
  fi
fi
venv=${VENV312:-${TMPDIR:-/tmp}/nfnet_jax_py312}
start=$(date +%s)
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Newest of everything setup.py admits (eager upgrades), from a real wheel.
"${pip[@]}" wheel --no-deps -w "$work/dist" "$repo" >/dev/null
"${pip[@]}" install --upgrade --upgrade-strategy eager "$work"/dist/nfnet_jax-*.whl pytest
# The same version number is "already satisfied" in a reused venv: without
# this, a second run tests the package of the first (seen in session 32).
"${pip[@]}" install --force-reinstall --no-deps "$work"/dist/nfnet_jax-*.whl
"$venv/bin/python" - <<'EOF'
import importlib.metadata as md, sys
names = ('jax', 'jaxlib', 'dm-haiku', 'optax', 'orbax-checkpoint', 'tensorflow-cpu',
         'tensorflow-datasets', 'numpy')
print('[newest-jax] python', sys.version.split()[0], ' '.join(f'{n} {md.version(n)}' for n in names))
assert not any(d.metadata['Name'] == 'torch' for d in md.distributions()), 'torch installed'
EOF
export TF_CPP_MIN_LOG_LEVEL=3

# 1. Model and train step under pmap and shard_map (8 fake CPU devices), from
#    the installed package (the checkout is not on the path: run outside it).
cp -r "$repo/tests" "$work/tests"
(cd "$work" && "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_train_step.py::test_step_matches_single_device_math \
    tests/test_train_step.py::test_pmap_and_shard_map_agree_and_one_device_agrees \
    tests/test_train_step.py::test_eval_step_masked_sums \
    "tests/test_models.py::test_nfnet_param_counts_match_table[F0]" \
    tests/test_models.py::test_nfnet_official_names_and_shapes \
    tests/test_models.py::test_tiny_forward_and_metrics)

# 2. Kill and resume with the installed command. After its compile a step of
#    this tiny model takes ~8 ms, so the kill must not wait for a particular
#    checkpoint (keep_checkpoints=2 deletes step 10 when step 30 is saved, and
#    a 0.5 s poll once missed steps 10->40 entirely): the run is long (400
#    steps), the poll is fast, and the kill comes at the first finalized
#    checkpoint of any step.
bin="$venv/bin"
cfg="$repo/configs/fashion_mnist.py:local"
w="$work/fmnist"
total=400
flags=(--config "$cfg" --workdir "$w" --config.train.total_steps=$total
       --config.train.checkpoint_every=10 --config.train.compilation_cache_dir=None)
finalized() { ls "$w/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' || true; }
# exec: $! must be the training process itself, not a subshell around it
# (killing a subshell would leave the run going and holding the workdir lock).
(cd "$work" && exec "$bin/nfnet-train" "${flags[@]}" >"$work/run1.log" 2>&1) &
pid=$!
for _ in $(seq 12000); do
  [ -n "$(finalized)" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.02
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[ -n "$(finalized)" ] || { cat "$work/run1.log"; echo "no checkpoint before the kill"; exit 1; }
[ ! -f "$w/summary.json" ] || { tail -5 "$work/run1.log"; echo "run finished before the kill"; exit 1; }
echo "[newest-jax] killed with checkpoints: $(finalized | tr '\n' ' ')"
(cd "$work" && "$bin/nfnet-train" "${flags[@]}" | tee "$work/run2.log")
grep -Eq "steps [1-9][0-9]*->$total" "$work/run2.log" || { echo "second run did not resume"; exit 1; }
"$venv/bin/python" -c "import json,sys; s=json.load(open('$w/summary.json')); assert s['step']==$total, s; print('[newest-jax] resumed run finished at step', s['step'], 'top-1', s['final_eval']['top1'])"

# 3. Evaluate and export the workdir.
(cd "$work" && "$bin/nfnet-evaluate" --config "$cfg" --checkpoint "$w" --out "$work/eval.json")
(cd "$work" && "$bin/nfnet-export" --from "ckpt:$w" --image_size 32 --channels 1 --out "$work/export")
[ -f "$work/export/model.stablehlo" ] && [ -d "$work/export/saved_model" ]
echo "[newest-jax] passed in $(( $(date +%s) - start )) s"
