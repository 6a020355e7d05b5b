#!/usr/bin/env bash
# Device check for a lent GPU machine (H100/H200, unknown software, no network).
#
# Real NVML readings (`schedctl gpus --json`), GPU poll latency (target p99 <= 10 ms), a real
# lease through GpuPool, and, when torch is there, a process-leak check on the leased GPU.
# Every step is guarded and time-boxed; the whole script stays well under 4 minutes.
#
#   bash scripts/device-check.sh        # from the repo root; report in $OUT/device-report.txt
#
# Optional inputs carried with the working tree (build/ is ignored by git, so name it in carry):
#   build/device-deps/    a `pip install --target` dir with schedctl's deps for the box's Python
#   build/device-wheels/  wheels for `pip install --no-index --find-links`
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/device-out}
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/schedctl-device.XXXXXX)
mkdir -p "$OUT"
cd "$ROOT" || exit 1

PYPATH="$ROOT"
[ -d "$ROOT/build/device-deps" ] && PYPATH="$PYPATH:$ROOT/build/device-deps"
PYPATH="$PYPATH:$WORK/deps"
export PYTHONPATH="$PYPATH${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
# DEVICE_CHECK_REHEARSAL=1 keeps SCHEDCTL_FAKE_GPUS, to rehearse the script on a host without GPUs.
[ -n "${DEVICE_CHECK_REHEARSAL:-}" ] || unset SCHEDCTL_FAKE_GPUS

step() { printf '\n=== %s ===\n' "$*"; }
# guard SECONDS CMD...: run with a time limit, report the exit status, never abort the script
guard() {
    local limit=$1
    shift
    timeout --kill-after=5 "$limit" "$@"
    local rc=$?
    [ "$rc" -eq 0 ] || echo "[step exited $rc: $*]"
    return 0
}
has_module() { "$PY" -c "import $1" >/dev/null 2>&1; }

install_deps() {
    # Exact wheels for the box's Python (made with `pip download --no-deps`); the box has the rest.
    if [ -d "$ROOT/build/device-wheels" ]; then
        guard 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$WORK/deps" "$ROOT"/build/device-wheels/*.whl
    fi
    if ! has_module pynvml; then
        guard 30 "$PY" -m pip install -q --timeout 5 --retries 0 --target "$WORK/deps" nvidia-ml-py
    fi
}

main() {
    step "host"
    date -u
    uname -a
    guard 10 "$PY" --version
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"

    step "nvidia-smi"
    guard 30 nvidia-smi
    guard 30 nvidia-smi --query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu,temperature.gpu,driver_version --format=csv
    guard 30 nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory --format=csv

    step "python modules"
    if ! has_module pynvml || ! has_module pydantic || ! has_module sqlalchemy \
        || ! has_module apscheduler || ! has_module structlog || ! has_module docker; then
        install_deps
    fi
    for module in pynvml click rich pydantic yaml sqlalchemy apscheduler structlog docker pytest torch; do
        if has_module "$module"; then echo "  $module: yes"; else echo "  $module: no"; fi
    done
    if ! has_module pynvml; then
        echo "pynvml is missing and could not be installed: NVML steps will report that."
    fi

    step "raw NVML snapshot (scheduler.gpu.nvml only)"
    guard 30 "$PY" - <<'EOF'
import json, sys, time
from scheduler.errors import GpuError
from scheduler.gpu.nvml import NvmlProbe
probe = NvmlProbe()
started = time.perf_counter()
try:
    host = probe.snapshot()
except GpuError as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")
first_ms = (time.perf_counter() - started) * 1000
print(json.dumps({"driver_version": host.driver_version, "cuda_version": host.cuda_version,
                  "first_snapshot_ms": round(first_ms, 2),
                  "gpus": [g.to_json() for g in host.gpus]}, indent=2))
EOF

    step "schedctl gpus --json"
    if timeout 30 "$PY" -m scheduler.cli gpus --help >/dev/null 2>&1; then
        guard 30 "$PY" -m scheduler.cli gpus --json
        guard 30 "$PY" -m scheduler.cli gpus
    else
        echo "(python -m scheduler.cli gpus not available: calling the click command directly)"
        guard 30 "$PY" - <<'EOF'
from types import SimpleNamespace
from scheduler.cli.gpus import gpus_command
from scheduler.config import GpuPolicy
app = SimpleNamespace(config=SimpleNamespace(gpu=GpuPolicy()), store=None)
for args in (["--json"], []):
    gpus_command.main(args, obj=app, standalone_mode=False)
EOF
    fi

    step "poll latency (bench/bench_gpu.py, real NVML)"
    guard 90 "$PY" bench/bench_gpu.py --polls 1000
    guard 60 "$PY" bench/bench_gpu.py --polls 500 --json | tee "$OUT/bench-gpu.json"

    step "lease one GPU through GpuPool (real NVML, SQLite store in $WORK)"
    guard 60 "$PY" - "$WORK" <<'EOF'
import json, os, subprocess, sys, threading, time
from pathlib import Path
from scheduler.config import GpuPolicy
from scheduler.gpu import GpuPool, build_probe, evaluate, leaked_processes
from scheduler.store import Store

from scheduler.errors import GpuError

work = Path(sys.argv[1])
policy = GpuPolicy(free_samples=2, sample_interval=0.5, wait=20)
store = Store(work / "schedctl.db")
probe = build_probe(5.0)
pool = GpuPool(store, probe, policy)
run_id = store.create_run(tier="device-check", trigger="manual", outcome="running")
try:
    for verdict in evaluate(probe.snapshot(), policy):
        print("verdict:", verdict.describe())
    lease = pool.acquire(run_id, "device-check", 1, 0, 20)
except GpuError as exc:
    sys.exit(f"no lease: {type(exc).__name__}: {exc}")
print("lease:", json.dumps(lease.provenance()), f"waited {lease.waited_s:.2f}s")
print("CUDA_VISIBLE_DEVICES =", lease.cuda_visible_devices())
store.update_run(run_id, **lease.provenance())
print("run row gpus:", list(store.get_run(run_id).gpus))

try:
    import torch  # noqa: F401
except ImportError:
    print("torch not installed: skipping the process-leak check")
else:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": lease.cuda_visible_devices()}
    hog = ("import torch, time; x = torch.ones(256, 1024, 1024, device='cuda'); "
           "print('hog ready', torch.cuda.get_device_name(0), flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", hog], env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    print("child:", line, "pid", proc.pid)
    leaked = leaked_processes(lease, probe, settle_s=0)
    print("while running, leaked_processes ->", [(p.pid, p.used_memory_mib) for p in leaked],
          "(pid seen by NVML matches child:", any(p.pid == proc.pid for p in leaked), ")")
    proc.kill()
    proc.wait()
    leaked = leaked_processes(lease, probe, settle_s=5)
    print("after kill, leaked_processes ->", [(p.pid, p.used_memory_mib) for p in leaked])
pool.release(run_id)
print("leases after release:", store.active_leases())
EOF

    step "pytest: GPU package (gpu-marked and NVML tests)"
    if has_module pytest && has_module sqlalchemy && has_module pydantic; then
        guard 120 "$PY" -m pytest -q -p no:cacheprovider -o addopts="-ra" tests/scheduler/gpu
    else
        echo "pytest, sqlalchemy or pydantic missing: skipped"
    fi

    step "schedctl run: gpu-marked examples on one leased GPU (local runner)"
    cat >"$WORK/config.yaml" <<EOF
state_dir: $WORK/state
runner: local
project:
  path: $ROOT/examples/suite
  python: $(command -v "$PY")
tiers:
  gpu:
    markers: gpu
    gpus: 1
    timeout: 300
  weekly:
    kind: torchrun
    gpus: all
    timeout: 300
    torchrun: {nproc: [1, all], steps: 30}
  weekly-cpu:
    kind: torchrun
    timeout: 300
    torchrun: {nproc: [1, 4], cpu_procs: 4, steps: 20, backend: gloo}
gpu:
  wait: 60
  sample_interval: 0.5
EOF
    SC=("$PY" -m scheduler --config "$WORK/config.yaml")
    guard 200 "${SC[@]}" run gpu --json | tee "$OUT/run-gpu.json"
    guard 30 "${SC[@]}" show 1

    step "schedctl run weekly: torchrun + nccl on every GPU"
    guard 240 "${SC[@]}" run weekly --json > "$OUT/run-weekly.json"
    guard 30 "${SC[@]}" show 2

    step "schedctl run weekly-cpu: 1 vs 4 gloo processes (scaling on this 16-core host)"
    guard 240 "${SC[@]}" run weekly-cpu --json > "$OUT/run-weekly-cpu.json"
    guard 30 "${SC[@]}" show 3

    step "docker on the device"
    if command -v docker >/dev/null; then guard 20 docker info; else echo "no docker CLI on this box"; fi
    ls -l /var/run/docker.sock 2>&1 | head -1

    step "done"
    date -u
}

main 2>&1 | tee "$OUT/device-report.txt"
rm -rf "$WORK"
