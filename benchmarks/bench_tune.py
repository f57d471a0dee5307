"""Targets of the tune issues, measured on this machine against an independent oracle; prints tables.

The oracle: a torch.utils.benchmark sweep of every (dtype, batch size) of the run's space, written
here without the tuner's code (its own training step: autocast, GradScaler for fp16, AdamW or the
workload's optimizer), in interleaved rounds in one process (this VM drifts by 15-30% over seconds,
so numbers taken minutes apart do not compare). A dtype whose throughput at the smallest batch is
below 1/4 of fp32's there (bf16/fp16 emulated on an AVX2 CPU: ~60x slower) is measured at that batch
only: no batch size makes up a 4x gap on a CPU, and a full sweep of it would take many minutes.

The oracle also compiles the same model (torch.compile, static shapes, each configuration cold
from a fresh inductor cache, the compiled backward outside autocast) at every point it measures,
in the same interleaved rounds; a compile's time is its first step less a measured one.
Where the run's space offers the CPU's bf16 matmuls for fp32 (the "matmul" lever), the oracle
measures fp32 so too ("fp32+bf16mm", its own mkldnn switch at every step), eager only: inductor
does not compile under a per-backend matmul precision.

1. Quality: per workload, `amp-advisor tune` (the CLI, Bayesian strategy, defaults) then the oracle.
   quality = oracle samples/s over the planned run (the recommendation's --train-steps, a compile's
   time included) of the recommended configuration / the oracle's best over dtype x batch x
   compile. Target: >= 0.95. The trials and the whole command's wall time are printed beside it.
2. Cost: the whole `amp-advisor tune --example transformer` command. Target: <= 60 s on 2 cores;
   and <= 2x the same tune with --skip-lever compile.
3. Compile where it pays: where the oracle's best compiled configuration is >= 5% faster over the
   planned run than its best eager one, compile is recommended; where it is slower, it is not.
4. Reduced precision where it wins: wherever the oracle's best reduced precision (tf32, bf16 or
   fp16) beats its best fp32 by more than 5%, a reduced precision must be recommended.
5. Never worse: the oracle's figure for the recommendation vs its figure for fp32 at the same batch.
6. Faults (--faults): workloads that run out of memory, hang or abort above batch 16, and one whose
   fp16 overflows: tune completes, records the failures, and recommends a configuration that
   avoids them.

On a GPU (--device cuda) the same, with the GPU's dtypes (tf32 is fp32 with TF32 matmuls) and batch
sizes; --landscapes DIR writes each sweep as a measured landscape for the tuner's simulator.

Usage: python benchmarks/bench_tune.py [--workloads transformer,convnet,mlp,hf_bert,hf_gpt2] [--rounds 3]
                                       [--device cpu|cuda] [--keep DIR] [--landscapes DIR] [--faults]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "transformer": ROOT / "amp_advisor" / "examples" / "transformer.py",
    "convnet": ROOT / "amp_advisor" / "examples" / "convnet.py",
    "mlp": ROOT / "amp_advisor" / "examples" / "mlp.py",
    "hf_bert": ROOT / "benchmarks" / "workloads" / "hf_bert.py",
    "hf_gpt2": ROOT / "benchmarks" / "workloads" / "hf_gpt2.py",  # the oracle's copy of --hf gpt2
}
TUNE_ARGS = {"hf_gpt2": ["--hf", "gpt2"]}  # tuned as a user would name it, not through the oracle's file
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the oracle's own dtype table
# fp32 weights and math with oneDNN's bf16 dot products (the tuner's "matmul" lever, on a CPU): the
# oracle's own name for it, set by its own switch at every step
FP32_BF16_MATMULS = "fp32+bf16mm"
HOPELESS = 0.25  # below this fraction of fp32 at the smallest batch: measured there only


ISA_FLAGS = {"amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512_fp16", "avx512f"}  # what a landscape records


def cpu_flags() -> set[str]:
    try:
        return {f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                for f in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def cpu_name() -> str:
    flags, model = set(), platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "unknown CPU", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    kind = ("AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16, no AMX" if "avx512_bf16" in flags
            else "AVX2 only" if "avx2" in flags else "unknown ISA")
    return f"{model} ({kind}), {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


# ------------------------------------------------------------------------------------ the oracle
def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"oracle_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def oracle_step(module, dtype: str, batch: int, wrap=None, device: str = "cpu", compile_mode: str | None = None):
    """One optimizer step of plain torch.amp training, as a user would write it; `wrap(model,
    dtype)` returns the model as the user wraps it (bench_tune_distributed.py: DDP or FSDP2).
    On a GPU, tf32 is fp32 with TF32 matmuls and convolutions, and fp32 has them off.
    `compile_mode`: the model under torch.compile(mode=..., dynamic=False), as the PyTorch docs
    write it, with the compiled backward outside autocast."""
    torch.manual_seed(0)
    dev = torch.device(device)
    model = module.build_model().train().to(dev)
    if wrap is not None:
        model = wrap(model, dtype)
    params = list(model.parameters())
    if compile_mode is not None:
        model = torch.compile(model, mode=compile_mode, dynamic=False)
    opt = module.build_optimizer(params) if hasattr(module, "build_optimizer") else torch.optim.AdamW(params, lr=1e-3)
    batches = [module.make_batch(batch, dev) for _ in range(4)]
    user_loss = getattr(module, "loss_fn", None)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == "fp16")
    counter = itertools.count()
    tf32 = dtype == "tf32"

    def loss_of(b):
        if user_loss is not None:
            return user_loss(model, b)
        out = model(**b) if isinstance(b, dict) else model(*b) if isinstance(b, (tuple, list)) else model(b)
        return out.loss if hasattr(out, "loss") else out

    def step():
        if dev.type == "cuda":  # the oracle's own switch: every step sets what its dtype means
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        else:
            torch.backends.mkldnn.matmul.fp32_precision = "bf16" if dtype == FP32_BF16_MATMULS else "ieee"
        b = batches[next(counter) % len(batches)]
        with torch.autocast(dev.type, dtype=AUTOCAST.get(dtype, torch.float32), enabled=dtype in AUTOCAST):
            loss = loss_of(b)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return step


FIRST_STEP: dict = {}  # (workload, dtype, batch) -> seconds of the first step after the build (a landscape field)


def measure(step, min_run_time: float) -> float:
    step()  # the first step after switching models is not measured
    return Timer("step()", globals={"step": step}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_run_time).median


def first_step(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def fresh_compile_cache() -> None:
    """A new inductor cache directory and no compiled graphs: the next compile is cold, as a
    user's first run of a new model is."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="oracle-inductor-")
    torch._dynamo.reset()


def oracle(path: Path, dtypes: list[str], batches: list[int], rounds: int, min_run_time: float,
           device: str = "cpu", every_round: dict | None = None, compile_modes: tuple[str, ...] = (),
           extra: tuple = ()) -> dict:
    """samples/s per (dtype, batch, compile mode or "off"): the median over interleaved rounds
    (ABBA order). A configuration that runs out of memory (or whose compile fails) is left out.
    Each compiled configuration is compiled cold (fresh_compile_cache) with static shapes; its
    first step less a measured one is its compile time (COMPILE_S). `extra`: (dtype, batch, mode)
    keys measured besides (the recommendation). `every_round` gets each round's figures."""
    module = load_module(path)
    smallest = min(batches)
    steps = {}
    torch._dynamo.config.recompile_limit = 1024  # one compiled model per configuration, all kept
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # never a silent fall back to eager

    def build(dtype: str, b: int, mode: str = "off") -> None:
        try:
            if mode != "off":
                fresh_compile_cache()
            with torch._functorch.config.patch(backward_pass_autocast="off"):
                step = oracle_step(module, dtype, b, device=device, compile_mode=None if mode == "off" else mode)
                FIRST_STEP[(path.stem, dtype, b, mode)] = first_step(step)
            steps[(dtype, b, mode)] = step
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001 -- a compile that fails is left out, and said
            print(f"  oracle: {path.stem} {dtype} bs={b} compile={mode} failed: {type(exc).__name__}: "
                  f"{str(exc)[:200]}", flush=True)

    for dtype in dtypes:
        build(dtype, smallest)
    first = {key: smallest / measure(step, min_run_time) for key, step in steps.items()}
    fp32_rate = first.get(("fp32", smallest, "off"))
    hopeless = {d for d in dtypes
                if fp32_rate and d != "fp32" and first.get((d, smallest, "off"), 0.0) < HOPELESS * fp32_rate}
    for dtype in dtypes:
        if dtype in hopeless:
            continue  # emulated: its one measurement stands
        for b in batches:
            if b != smallest:
                build(dtype, b)
            for mode in compile_modes if dtype != FP32_BF16_MATMULS else ():
                build(dtype, b, mode)  # bf16 matmuls: inductor cannot compile under them (it reads one precision)
    for dtype, b, mode in extra:
        if (dtype, b, mode) not in steps:
            build(dtype, b, mode)
    rates: dict = {key: [] for key in steps}
    keys = list(steps)
    with torch._functorch.config.patch(backward_pass_autocast="off"):
        for r in range(rounds):
            for key in (keys if r % 2 == 0 else keys[::-1]):
                rates[key].append(key[1] / measure(steps[key], min_run_time))
    if every_round is not None:
        every_round.update(rates)
    out = {key: statistics.median(v) for key, v in rates.items()}
    for key, rate in first.items():
        if key not in out:
            out[key] = rate
    for key, rate in out.items():
        if key[2] != "off":
            COMPILE_S[(path.stem, *key)] = max(0.0, FIRST_STEP[(path.stem, *key)] - key[1] / rate)
    return out


COMPILE_S: dict = {}  # (workload, dtype, batch, mode) -> the cold compile time (s)


def run_rate(name: str, key: tuple, rate: float, train_steps: int) -> float:
    """samples/s over a planned run of `train_steps` steps, its compile time included."""
    seconds = train_steps * key[1] / rate + COMPILE_S.get((name, *key), 0.0)
    return train_steps * key[1] / seconds


def write_landscape(directory: Path, name: str, path: Path, measured: dict, every_round: dict, rounds: int,
                    min_run_time: float, device: str) -> Path:
    """The oracle's sweep in the measured-landscape format (../shared/landscapes/README.md), for
    the tuner's simulator (tests/simulator/measured/)."""
    points = [{"dtype": d, "batch_size": b, "compiled": mode != "off",
               "samples_per_s_rounds": [round(v, 2) for v in every_round.get((d, b, mode), [rate])],
               "samples_per_s": rate, "first_step_s": round(FIRST_STEP.get((path.stem, d, b, mode), 0.0), 4)}
              for (d, b, mode), rate in sorted(measured.items()) if mode in ("off", "default")]
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    where = {"gpu": gpu} if gpu else {"cpu": cpu_name(), "flags": sorted(cpu_flags() & ISA_FLAGS)}
    data = {"workload": str(path.relative_to(ROOT)), **where,
            "torch": torch.__version__, "measured": time.strftime("%Y-%m-%d"),
            "method": f"benchmarks/bench_tune.py's oracle: torch.utils.benchmark blocked_autorange median per round, "
                      f"{rounds} interleaved rounds (ABBA), min_run_time {min_run_time} s; first_step_s = the first "
                      "training step after build", "points": points}
    directory.mkdir(parents=True, exist_ok=True)
    kind = gpu.split()[-1].lower() if gpu else ("cpu-amx" if "amx_bf16" in where["flags"] else
                                                "cpu-avx512bf16" if "avx512_bf16" in where["flags"] else "cpu-avx2")
    out = directory / f"{kind}-{name}.json"
    out.write_text(json.dumps(data, indent=1) + "\n")
    return out


# -------------------------------------------------------------------------------------- tune runs
def tune(name: str, path: Path, out: Path, launcher: tuple[str, ...] = (sys.executable,), extra: tuple[str, ...] = (),
         env: dict | None = None) -> tuple[dict, dict, list[dict], float]:
    """`amp-advisor tune` with the defaults, run by `launcher` (python, or torchrun with `extra`
    options such as --parallel or --device)."""
    cmd = [*launcher, "-m", "amp_advisor", "tune", "--out", str(out), *extra]
    cmd += TUNE_ARGS.get(name) or (["--example", name] if path.parent.name == "examples" else [str(path)])
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"tune {name} failed ({done.returncode}): {done.stderr[-2000:]}")
    rec = json.loads((out / "recommendation.json").read_text())
    run = json.loads((out / "run.json").read_text())
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    return rec, run, trials, wall


def grid_size(space: dict) -> int:
    """The points that change speed: dtype x batch size (the oracle's sweep)."""
    return len(space["dtypes"]) * len(space["batch_sizes"])


def faults(root: Path) -> None:
    from amp_advisor.lifecycle import tune as run_tune

    print("\n6. faults: tune on workloads that fail above batch 16 "
          "(batch sizes 8,16,32,64; grid; 15 s trial timeout)\n")
    print(f"{'workload':16s} {'trials':>6s} {'wall s':>6s} {'failures recorded':30s} {'recommendation':16s}  verdict")
    for name in ("oom_above_8", "hang_above_16", "abort_above_16", "fp16_overflow"):
        start = time.perf_counter()
        result = run_tune(ROOT / "tests" / "workloads" / f"{name}.py", device="cpu", out=root / f"fault-{name}",
                          strategy="grid", batch_sizes=(8, 16, 32, 64), trial_timeout_s=15.0, steps=4)
        wall = time.perf_counter() - start
        failures: dict[str, int] = {}
        for r in result.records:
            if r.result.status.value not in ("ok", "pruned"):
                failures[r.result.status.value] = failures.get(r.result.status.value, 0) + 1
        rec = result.recommendation
        bad = {(r.candidate.dtype, r.candidate.batch_size) for r in result.records if not r.feasible}
        avoided = rec is not None and (rec.dtype, rec.batch_size) not in bad
        shown = ", ".join(f"{k} x{v}" for k, v in sorted(failures.items())) or "none"
        chosen = f"{rec.dtype} bs={rec.batch_size}" if rec else "none"
        print(f"{name:16s} {result.trials_run:6d} {wall:6.0f} {shown:30s} "
              f"{chosen:16s}  {'avoids them' if avoided else 'DOES NOT'}")


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return (f"{torch.cuda.get_device_name(0)} (sm_{''.join(map(str, torch.cuda.get_device_capability(0)))}), "
                f"torch {torch.__version__}, CUDA {torch.version.cuda}; host {cpu_name()}")
    return cpu_name()


def rec_key(rec: dict) -> tuple:
    levers = rec.get("levers") or {}
    dtype = FP32_BF16_MATMULS if levers.get("matmul", "off") != "off" else rec["dtype"]
    return dtype, rec["batch_size"], levers.get("compile", "off")


def oracle_dtypes(space: dict) -> list[str]:
    """The tuner's dtypes, and fp32 with bf16 matmuls where its space offers the matmul lever."""
    offered = dict((name, values) for name, values in space.get("levers") or ())
    return [*space["dtypes"], *([FP32_BF16_MATMULS] if len(offered.get("matmul", ())) > 1 else [])]


def shown(key: tuple) -> str:
    return f"{key[0]} bs={key[1]}" + ("" if key[2] == "off" else f" compiled {key[2]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="transformer,convnet,mlp,hf_bert,hf_gpt2")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU (the tuner gets --device too)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved oracle rounds")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="Timer.blocked_autorange per measurement (s)")
    parser.add_argument("--compile-modes", default="default",
                        help="torch.compile modes the oracle measures at every point (comma-separated; '' for none)")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--landscapes", type=Path, help="write each oracle sweep here as a measured landscape")
    parser.add_argument("--faults", action="store_true", help="also tune the faulty workloads (about 5 minutes)")
    parser.add_argument("--only-faults", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only_faults:
        with tempfile.TemporaryDirectory() as tmp:
            faults(args.keep or Path(tmp))
        return
    print(f"machine: {machine(args.device)}\n")
    modes = tuple(m for m in args.compile_modes.split(",") if m)
    rows, eager_walls = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for name in [w for w in args.workloads.split(",") if w]:
            path = WORKLOADS[name]
            out = root / f"{name}-{time.strftime('%H%M%S')}"
            rec, run, trials, wall = tune(name, path, out, extra=("--device", args.device))
            if name == "transformer":  # the cost of the compile lever: the same tune without it
                eager_walls[name] = tune(name, path, root / f"{name}-eager-{time.strftime('%H%M%S')}",
                                         extra=("--device", args.device, "--skip-lever", "compile"))[3]
            tuned = next((t["result"]["parameters"] for t in trials if t["result"].get("parameters")), None)
            own = sum(p.numel() for p in load_module(path).build_model().parameters())
            if tuned is not None and tuned != own:  # e.g. --hf gpt2 and the oracle's copy of it
                raise SystemExit(f"{name}: the tuner's model has {tuned} parameters, the oracle's {own}: not one model")
            space = run["context"]["space"]
            batches = sorted(set(space["batch_sizes"]) | {rec["batch_size"]})  # an edge bisection's size too
            every_round: dict = {}
            measured = oracle(path, oracle_dtypes(space), batches, args.rounds, args.min_run_time, args.device,
                              every_round, compile_modes=modes, extra=(rec_key(rec),))
            steps = int(rec["measured"].get("train_steps") or run["settings"].get("train_steps") or 5000)
            rows.append((name, rec, trials, wall, space, measured, steps))
            print(f"  {name}: tuned in {wall:.0f} s, oracle measured {len(measured)} configurations", flush=True)
            if args.landscapes:
                written = write_landscape(args.landscapes, name, path, measured, every_round, args.rounds,
                                          args.min_run_time, args.device)
                print(f"  {name}: landscape written to {written}", flush=True)
    report(rows, eager_walls)
    if args.faults:
        with tempfile.TemporaryDirectory() as tmp:
            faults(args.keep or Path(tmp))


def report(rows: list, eager_walls: dict) -> None:
    print("\n1. quality: the oracle's samples/s over the planned run (--train-steps; a compile's time included) "
          "of the recommendation / the oracle's best, over dtype x batch x compile; the trials and the whole "
          "command's wall time\n")
    print(f"{'workload':12s} {'recommends':30s} {'oracle':>8s} {'oracle best':30s} {'best':>8s} {'quality':>7s} "
          f"{'trials':>6s} {'points':>6s} {'wall s':>6s}  verdict")
    for name, rec, trials, wall, _space, measured, steps in rows:
        over = {k: run_rate(name, k, v, steps) for k, v in measured.items()}
        key, best_key = rec_key(rec), max(over, key=over.get)
        quality = over.get(key, float("nan")) / over[best_key]
        print(f"{name:12s} {shown(key):30s} {over.get(key, float('nan')):8.1f} {shown(best_key):30s} "
              f"{over[best_key]:8.1f} {quality:7.3f} {len(trials):6d} {len(measured):6d} {wall:6.0f}  "
              f"{'meets' if quality >= 0.95 else 'MISSES'} (>= 0.95)")
    for name, _rec, _trials, wall, *_ in rows:
        if name == "transformer":
            print(f"\n2. cost: `amp-advisor tune --example transformer`, the whole command: {wall:.0f} s  "
                  f"{'meets' if wall <= 60 else 'MISSES'} (<= 60 s)")
            if name in eager_walls:
                ratio = wall / eager_walls[name]
                print(f"   against the same tune with --skip-lever compile ({eager_walls[name]:.0f} s): {ratio:.2f}x  "
                      f"{'meets' if ratio <= 2 else 'MISSES'} (<= 2x)")

    print("\n3. compile where it pays: per workload, the oracle's best compiled configuration against its best "
          "eager one, over the planned run (its compile time included)\n")
    print(f"{'workload':12s} {'best eager':16s} {'best compiled':30s} {'compile s':>9s} {'ratio':>6s} "
          f"{'recommended':30s}  verdict")
    for name, rec, _trials, _wall, _space, measured, steps in rows:
        over = {k: run_rate(name, k, v, steps) for k, v in measured.items()}
        eager = [k for k in over if k[2] == "off"]
        compiled = [k for k in over if k[2] != "off"]
        if not eager or not compiled:
            continue
        e, c = max(eager, key=over.get), max(compiled, key=over.get)
        ratio = over[c] / over[e]
        chose = rec_key(rec)[2] != "off"
        verdict = ("meets (>= 5% faster: compiled)" if ratio >= 1.05 and chose else
                   "MISSES (>= 5% faster, eager recommended)" if ratio >= 1.05 else
                   "MISSES (slower, compiled recommended)" if ratio < 1.0 and chose else
                   "meets (slower: eager)" if ratio < 1.0 else "either (within 5%)")
        print(f"{name:12s} {shown(e):16s} {shown(c):30s} {COMPILE_S.get((name, *c), 0.0):9.1f} {ratio:6.2f} "
              f"{shown(rec_key(rec)):30s}  {verdict}")

    print("\n4. reduced precision where it wins: each dtype's best in the oracle vs its best fp32 (eager)\n")
    print(f"{'workload':12s} {'dtype':5s} {'oracle best':16s} {'vs fp32':>7s} {'recommended':12s}  verdict")
    for name, rec, _trials, _wall, space, measured, _steps in rows:
        best = {d: max(((k, v) for k, v in measured.items() if k[0] == d and k[2] == "off"), key=lambda kv: kv[1],
                       default=None) for d in space["dtypes"]}
        if not best.get("fp32"):
            continue
        fp32 = best["fp32"][1]
        winner = max((d for d in best if d != "fp32" and best[d]), key=lambda d: best[d][1], default=None)
        for dtype, kv in best.items():
            if dtype == "fp32" or kv is None:
                continue
            ratio = kv[1] / fp32
            verdict = ""
            if dtype == winner:
                needed = ratio > 1.05
                ok = rec["dtype"] != "fp32" if needed else True
                verdict = ("meets (it wins by > 5%: a reduced precision recommended)" if needed and ok else
                           "MISSES (it wins by > 5%, fp32 recommended)" if needed else "n/a (no dtype wins by > 5%)")
            print(f"{name:12s} {dtype:5s} {f'bs={kv[0][1]} {kv[1]:.0f}':16s} {ratio:7.2f} "
                  f"{rec['dtype']:12s}  {verdict}")

    print("\n5. never worse: the oracle's recommendation vs eager fp32 at the same batch size\n")
    print(f"{'workload':12s} {'recommends':30s} {'oracle':>8s} {'fp32 same bs':>12s} {'ratio':>6s} "
          f"{'tune said':>9s}  verdict")
    for name, rec, _trials, _wall, _space, measured, _steps in rows:
        key = rec_key(rec)
        twin = measured.get(("fp32", rec["batch_size"], "off"))
        ratio = measured.get(key, float("nan")) / twin if twin else float("nan")
        said = rec["measured"].get("speedup_vs_fp32")
        print(f"{name:12s} {shown(key):30s} {measured.get(key, float('nan')):8.1f} {twin or float('nan'):12.1f} "
              f"{ratio:6.2f} {said or float('nan'):9.2f}  "
              f"{'meets' if ratio >= 0.98 else 'MISSES'} (not slower by > 2%)")

    print("\noracle: samples/s per configuration (median of its interleaved rounds; compiled: [compile s]); "
          "* the recommendation\n")
    for name, rec, _trials, _wall, _space, measured, _steps in rows:
        for dtype, mode in dict.fromkeys((k[0], k[2]) for k in sorted(measured)):
            cells = [f"bs={b} {rate:.0f}{'*' if (d, b, m) == rec_key(rec) else ''}"
                     + (f" [{COMPILE_S[(name, d, b, m)]:.0f}s]" if m != "off" else "")
                     for (d, b, m), rate in sorted(measured.items()) if (d, m) == (dtype, mode)]
            print(f"  {name:12s} {dtype:5s} {mode:10s} " + "  ".join(cells))

    print("\nwhy, as the runs say it:")
    for name, rec, *_ in rows:
        print(f"  {name}: {shown(rec_key(rec))} -- {rec['why']}")
        if rec.get("machine_busy"):
            print(f"    busy: {rec['machine_busy']}")


if __name__ == "__main__":
    main()
