#!/usr/bin/env python3
"""The PyTorch peer: "value model v1" (ltvx's base preset) and, optionally, the large preset, timed in
PyTorch on one device, for scripts/gpu-check.sh to set beside `ltvx bench --backend cuda`.

    python3 scripts/bench-torch.py [--device cuda|cpu] [--batches 1,256,4096,65536,262144]
        [--duration 1] [--presets base,large | --model-info INFO.json ...] [--json OUT]

Needs only torch, numpy and the standard library (a GPU host without network).

The model is the function ltvx's presets define (src/model/preset.rs), written as a PyTorch user
would: Conv1d + ReLU (+ MaxPool1d(2)) layers with "same" padding, global average pool over time,
concat of the static features, Linear + ReLU layers, and the heads (ltv: 3 raw outputs, churn: 1 +
sigmoid, segment: 5 + softmax). Weights are He-normal (std sqrt(2 / fan_in)), biases N(0, 0.05), from
a fixed seed: speed does not depend on them, the function's shape does. The built-in presets copy
preset.rs; `--model-info` takes the shapes from `ltvx info --json MODEL` instead (what gpu-check.sh
does, so the peer follows the presets if they change).

Variants: each of --dtypes (fp16, bf16, and fp32 as the reference) eager and compiled with
torch.compile(fullgraph=True). The compile mode (--compile-mode auto) is "reduce-overhead" on CUDA:
inductor's fusions plus CUDA graphs, which remove the per-kernel launch cost that dominates at batch 1
to 256; at large batches the convolutions and matrix products run in cuDNN / cuBLAS either way.
"max-autotune" variants benchmark Triton templates for every shape, minutes per variant, which a check
of a few minutes cannot afford (pass --compile-mode max-autotune-no-cudagraphs for a longer run). On
the CPU, "auto" is inductor's default mode (CUDA graphs do not apply). A variant that fails to compile
is reported as that variant's error; the script goes on.

Timing, per (model, variant, batch, io): the first call alone (compilation, cuDNN autotuning), a
warm-up of a tenth of --duration (each call synchronised, to size the repetitions), then REPS timed
repetitions of back-to-back calls filling --duration, each timed with CUDA events on a GPU (wall
clock on the CPU), under torch.inference_mode(). customers/s is the median over the repetitions, with
min and max as the spread. io "resident": inputs already on the device in the variant's dtype, outputs
left there (the device-resident figure). io "host": f32 inputs in (pageable) host memory, copied in,
cast on the device, scored, and the three heads copied back to host memory as f32 (end to end, as
`ltvx bench` times its CUDA backend). A batch that does not fit in device memory is reported as
skipped with the reason (the allocator's cache is emptied, the run goes on). --budget bounds the whole
run: configurations not started by then are reported as skipped.

Checks: once per model, fp32 eager against an independent float64 numpy forward pass of the same
weights (8 customers); after each timed configuration, one more call's outputs (up to 1024 rows)
against fp32 eager on the same inputs (max abs error per head, and whether all are finite, in the
JSON). torch.compile keeps its default shape handling: batch 1 is compiled on its own, the next batch
size recompiles with a dynamic batch dimension that the larger ones reuse.

Testing aid: BENCH_TORCH_FAKE_OOM=BATCH makes every configuration of that batch raise PyTorch's
out-of-memory error, so the skip path can be exercised on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from torch import nn

SEED = 20240601
REPS = 10
MIN_REPS = 3
SEGMENTS = 5
DEFAULT_INPUTS = (4, 52, 32)  # seq channels C, weeks T, static features F
# src/model/preset.rs: convolutions as (out channels, kernel, max-pool after it), dense widths.
PRESETS = {
    "base": ([(32, 5, False), (32, 5, True), (64, 3, False)], [256, 128]),
    "large": (
        [(64, 5, False), (128, 5, False), (256, 5, True), (256, 3, False), (256, 3, False), (256, 3, False)],
        [1024, 1024, 512],
    ),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------
# The model's shape


@dataclass
class Conv:
    out: int
    kernel: int
    pad: int
    pool: bool


@dataclass
class Spec:
    name: str
    source: str
    channels: int
    weeks: int
    static: int
    convs: list = field(default_factory=list)
    dense: list = field(default_factory=list)
    heads: tuple = (3, 1, SEGMENTS)

    def macs(self) -> int:
        total, c, t = 0, self.channels, self.weeks
        for cv in self.convs:
            t_out = t + 2 * cv.pad - cv.kernel + 1
            total += t_out * cv.out * c * cv.kernel
            c, t = cv.out, (t_out // 2 if cv.pool else t_out)
        width = c + self.static
        for units in self.dense:
            total += width * units
            width = units
        return total + width * sum(self.heads)

    def describe(self) -> str:
        convs = " ".join(f"conv{c.out}k{c.kernel}{'+pool' if c.pool else ''}" for c in self.convs)
        return (f"seq [{self.channels},{self.weeks}] static [{self.static}]: {convs} gap concat "
                f"dense {'-'.join(map(str, self.dense))} heads {'+'.join(map(str, self.heads))}")


def builtin_spec(name: str) -> Spec:
    convs, dense = PRESETS[name]
    c, t, f = DEFAULT_INPUTS
    # "same" padding; every preset kernel is odd.
    return Spec(name, "built-in copy of src/model/preset.rs", c, t, f,
                [Conv(o, k, k // 2, p) for o, k, p in convs], list(dense))


def spec_from_info(path: str) -> Spec:
    """The shapes of a model from `ltvx info --json`: its nodes must be the presets' chain (conv,
    relu, optional max-pool, ..., global average pool, concat with static, dense + relu, ..., the
    three heads); anything else is refused rather than guessed."""
    with open(path) as fh:
        info = json.load(fh)
    inputs = info["inputs"]
    layers = {layer["name"]: layer for layer in info["layers"]}
    name = info.get("name", os.path.basename(path))
    name = name[len("ltvx-"):] if name.startswith("ltvx-") else name
    spec = Spec(name, f"ltvx info --json ({os.path.basename(path)})",
                inputs["seq_channels"], inputs["seq_len"], inputs["static_features"])
    cur, length, stage = "seq", spec.weeks, "conv"
    heads: dict = {}
    pending: dict = {}  # head logits node -> head kind, waiting for its activation

    def bad(node, why):
        return ValueError(f"{path}: node {node['name']} ({node['op']}): {why}; bench-torch.py builds only "
                          "the presets' chain")

    for node in info["nodes"]:
        op, ins = node["op"], node["inputs"]
        if op == "dense" and layers.get(node["name"], {}).get("head"):
            kind = layers[node["name"]]["head"]
            if ins != [cur]:
                raise bad(node, "a head not fed by the last hidden layer")
            heads[kind] = (node["name"], layers[node["name"]]["weight_shape"][0])
            pending[node["output"]] = kind
            continue
        if op in ("sigmoid", "softmax"):
            kind = pending.get(ins[0])
            if kind != {"sigmoid": "churn", "softmax": "segment"}[op]:
                raise bad(node, "an activation on something other than its head")
            continue
        if ins[:1] != [cur]:
            raise bad(node, f"input {ins} is not the chain's current tensor {cur}")
        if op == "conv1d" and stage == "conv":
            out, _cin, k = layers[node["name"]]["weight_shape"]
            t_out = node["shape"][1]
            if t_out == length and k % 2 == 1:
                pad = k // 2
            elif t_out == length - k + 1:
                pad = 0
            else:
                raise bad(node, f"output length {t_out} from {length} with kernel {k}")
            spec.convs.append(Conv(out, k, pad, False))
            length = t_out
        elif op == "relu" and (spec.convs or spec.dense):
            pass  # every conv and hidden dense layer of the presets is followed by one; checked below
        elif op == "max_pool1d" and stage == "conv" and spec.convs:
            if node["shape"][1] != length // 2:
                raise bad(node, "not a max-pool of 2")
            spec.convs[-1].pool = True
            length //= 2
        elif op == "global_avg_pool" and stage == "conv":
            stage = "gap"
        elif op == "concat" and stage == "gap" and ins == [cur, "static"]:
            stage = "dense"
        elif op == "dense" and stage == "dense":
            spec.dense.append(layers[node["name"]]["weight_shape"][0])
        else:
            raise bad(node, "unexpected here")
        cur = node["output"]
    relus = sum(1 for n in info["nodes"] if n["op"] == "relu")
    if relus != len(spec.convs) + len(spec.dense):
        raise ValueError(f"{path}: {relus} ReLUs for {len(spec.convs)} convolutions and {len(spec.dense)} dense layers")
    if set(heads) != {"ltv", "churn", "segment"}:
        raise ValueError(f"{path}: heads {sorted(heads)}, expected ltv, churn, segment")
    spec.heads = (heads["ltv"][1], heads["churn"][1], heads["segment"][1])
    if "macs_per_customer" in info and info["macs_per_customer"] != spec.macs():
        raise ValueError(f"{path}: ltvx counts {info['macs_per_customer']} MACs, this reading {spec.macs()}")
    return spec


class ValueModel(nn.Module):
    def __init__(self, spec: Spec, seed: int = SEED):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        trunk, c = [], spec.channels
        for cv in spec.convs:
            trunk += [he(nn.Conv1d(c, cv.out, cv.kernel, padding=cv.pad), gen), nn.ReLU(inplace=True)]
            if cv.pool:
                trunk.append(nn.MaxPool1d(2))
            c = cv.out
        self.trunk = nn.Sequential(*trunk)
        mlp, width = [], c + spec.static
        for units in spec.dense:
            mlp += [he(nn.Linear(width, units), gen), nn.ReLU(inplace=True)]
            width = units
        self.mlp = nn.Sequential(*mlp)
        ltv, churn, segment = spec.heads
        self.ltv = he(nn.Linear(width, ltv), gen)
        self.churn = he(nn.Linear(width, churn), gen)
        self.segment = he(nn.Linear(width, segment), gen)

    def forward(self, seq, static):
        h = self.trunk(seq).mean(dim=2)
        h = self.mlp(torch.cat((h, static), dim=1))
        return self.ltv(h), torch.sigmoid(self.churn(h)), torch.softmax(self.segment(h), dim=1)


def he(layer, gen):
    with torch.no_grad():
        w = layer.weight
        fan_in = w[0].numel()
        w.copy_(torch.randn(w.shape, generator=gen) * math.sqrt(2.0 / fan_in))
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.05)
    return layer


def numpy_forward(model: ValueModel, seq: np.ndarray, static: np.ndarray):
    """The same function in float64 numpy, from the module's weights: an independent check that the
    module computes what the spec says."""
    def arr(t):
        return t.detach().to("cpu", torch.float64).numpy()

    h = seq.astype(np.float64)
    for m in model.trunk:
        if isinstance(m, nn.Conv1d):
            w, b, pad = arr(m.weight), arr(m.bias), m.padding[0]
            k = w.shape[2]
            x = np.pad(h, ((0, 0), (0, 0), (pad, pad)))
            win = np.lib.stride_tricks.sliding_window_view(x, k, axis=2)  # [n, cin, t_out, k]
            h = np.einsum("nctk,ock->not", win, w) + b[None, :, None]
        elif isinstance(m, nn.ReLU):
            h = np.maximum(h, 0.0)
        elif isinstance(m, nn.MaxPool1d):
            t = h.shape[2] // 2 * 2
            h = h[:, :, :t].reshape(h.shape[0], h.shape[1], -1, 2).max(axis=3)
    h = np.concatenate([h.mean(axis=2), static.astype(np.float64)], axis=1)
    for m in model.mlp:
        h = h @ arr(m.weight).T + arr(m.bias) if isinstance(m, nn.Linear) else np.maximum(h, 0.0)
    ltv = h @ arr(model.ltv.weight).T + arr(model.ltv.bias)
    churn = 1.0 / (1.0 + np.exp(-(h @ arr(model.churn.weight).T + arr(model.churn.bias))))
    s = h @ arr(model.segment.weight).T + arr(model.segment.bias)
    s = np.exp(s - s.max(axis=1, keepdims=True))
    return ltv, churn, s / s.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------------
# Timing


class Device:
    def __init__(self, name: str):
        self.torch = torch.device(name)
        self.cuda = self.torch.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.torch)

    def free(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def timed(self, fn, calls: int) -> float:
        """Seconds for `calls` back-to-back calls: CUDA events on a GPU, wall clock on the CPU."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - t


def is_oom(e: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None) or getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    text = f"{type(e).__name__}: {e}"
    return any(s in text for s in ("out of memory", "OutOfMemoryError", "CUBLAS_STATUS_ALLOC_FAILED",
                                   "CUDNN_STATUS_ALLOC_FAILED", "CUDA_ERROR_OUT_OF_MEMORY"))


def fake_oom(batch: int):
    if os.environ.get("BENCH_TORCH_FAKE_OOM") == str(batch):
        oom = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
        raise oom(f"CUDA out of memory (BENCH_TORCH_FAKE_OOM={batch}, a test of the skip path)")


def measure(dev: Device, fn, batch: int, duration: float) -> dict:
    t = time.perf_counter()
    fn()
    dev.sync()
    first = time.perf_counter() - t
    # Warm-up, each call synchronised so that its time sizes the repetitions (an unsynchronised loop
    # would queue far more GPU work than it meant to).
    calls, t = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - t < duration / 10:
        fn()
        dev.sync()
        calls += 1
    per_call = (time.perf_counter() - t) / calls
    reps = REPS
    if per_call * REPS > duration:
        reps = max(MIN_REPS, int(duration / per_call))
    per_rep = max(1, round(duration / reps / per_call))
    rates, call_us = [], []
    for _ in range(reps):
        s = dev.timed(fn, per_rep)
        rates.append(per_rep * batch / s)
        call_us.append(s / per_rep * 1e6)
    rates.sort()
    return {
        "customers_per_s": statistics.median(rates),
        "customers_per_s_min": rates[0],
        "customers_per_s_max": rates[-1],
        "reps": reps,
        "calls_per_rep": per_rep,
        "call_us_p50": statistics.median(call_us),
        "first_call_s": first,
    }


def inputs(batch: int, channels: int, weeks: int, static: int, seed: int):
    """f32 inputs of log1p-scaled weekly counts' range (seq) and standardised features (static), in
    host memory; values do not change the speed of any of these kernels."""
    gen = torch.Generator().manual_seed(seed + batch)
    seq = torch.rand((batch, channels, weeks), generator=gen) * 3.0
    st = torch.randn((batch, static), generator=gen)
    return seq, st


# ---------------------------------------------------------------------------------------------------
# The run


def compile_mode(arg: str, dev: Device):
    if arg == "auto":
        return "reduce-overhead" if dev.cuda else None
    return None if arg == "default" else arg


def reset_compiler():
    """Dynamo's caches and the CUDA-graph trees (with their memory pools) dropped: each variant is
    compiled afresh and leaves no device memory behind. Older versions' reset keeps the trees."""
    import torch._dynamo
    torch._dynamo.reset()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        try:
            from torch._inductor.cudagraph_trees import reset_cudagraph_trees
            reset_cudagraph_trees()
        except Exception:  # noqa: BLE001 (a version without it, or nothing to reset)
            pass


def configure_compiler():
    import torch._dynamo
    cfg = torch._dynamo.config
    # Each model and dtype is compiled afresh (reset between variants), and a recompilation limit that
    # is hit must be an error, never a silent fall-back to eager timed as "compile".
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, 64)
    if hasattr(cfg, "fail_on_recompile_limit_hit"):
        cfg.fail_on_recompile_limit_hit = True
    if hasattr(cfg, "suppress_errors"):
        cfg.suppress_errors = False


def first_line(e: BaseException, limit: int = 400) -> str:
    """The error on one line, cut at `limit` characters (torch.compile's first line alone says only
    which backend raised)."""
    text = f"{type(e).__name__}: {e}".strip()
    line = " / ".join(ln.strip() for ln in text.splitlines() if ln.strip())
    return line if len(line) <= limit else line[:limit] + "..."


def max_errors(got, want) -> dict:
    return {k: float((g.float() - w.float()).abs().max().item()) if g.numel() else 0.0
            for k, g, w in zip(("ltv", "churn", "segment"), got, want)}


class Runner:
    def __init__(self, args, dev: Device):
        self.a, self.dev = args, dev
        self.deadline = time.monotonic() + args.budget if args.budget else None
        self.doc = {"tool": "scripts/bench-torch.py", "environment": environment(dev, args),
                    "config": {}, "models": {}, "rows": []}
        self.host_inputs: dict = {}

    def save(self):
        if not self.a.json:
            return
        tmp = self.a.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.doc, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, self.a.json)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def row(self, **kw):
        self.doc["rows"].append(kw)
        self.save()
        print_row(kw)
        sys.stdout.flush()

    def host(self, spec: Spec, batch: int):
        key = (spec.channels, spec.weeks, spec.static, batch)
        if key not in self.host_inputs:
            self.host_inputs[key] = inputs(batch, spec.channels, spec.weeks, spec.static, SEED)
        return self.host_inputs[key]

    def run_model(self, spec: Spec):
        a, dev = self.a, self.dev
        ref = ValueModel(spec).eval()
        seq, st = inputs(8, spec.channels, spec.weeks, spec.static, SEED + 1)
        with torch.inference_mode():
            got = [t.double().numpy() for t in ref(seq, st)]
        want = numpy_forward(ref, seq.numpy(), st.numpy())
        err = {k: float(np.abs(g - w).max()) for k, g, w in zip(("ltv", "churn", "segment"), got, want)}
        scale = max(float(np.abs(w).max()) for w in want)
        self.doc["models"][spec.name] = {
            "source": spec.source, "shape": spec.describe(), "macs_per_customer": spec.macs(),
            "parameters": sum(p.numel() for p in ref.parameters()),
            "fp32_eager_vs_numpy_float64_max_abs_err": err,
            "fp32_eager_matches_numpy": max(err.values()) <= 1e-4 * max(1.0, scale),
        }
        print(f"\n{spec.name}: {spec.describe()}; {spec.macs():,} MACs/customer; "
              f"fp32 eager vs numpy float64 max abs err {max(err.values()):.2e}")
        if not self.doc["models"][spec.name]["fp32_eager_matches_numpy"]:
            print(f"{spec.name}: WARNING fp32 eager disagrees with the numpy forward pass", file=sys.stderr)
        ref = ref.to(dev.torch)
        for dt in a.dtypes:
            for mode in a.modes:
                self.run_variant(spec, ref, dt, mode)

    def run_variant(self, spec: Spec, ref: ValueModel, dt: str, mode: str):
        a, dev = self.a, self.dev
        cmode = compile_mode(a.compile_mode, dev) if mode == "compile" else None
        base = dict(model=spec.name, dtype=dt, mode=mode, compile_mode=cmode if mode == "compile" else None)
        model = copy.deepcopy(ref).to(dtype=DTYPES[dt]).eval()
        fn = model
        broken = None  # a compile failure, reported for every batch of the variant
        if mode == "compile":
            reset_compiler()
            try:
                fn = torch.compile(model, mode=cmode, fullgraph=True)
            except Exception as e:  # noqa: BLE001 (any failure is this variant's result)
                broken = f"torch.compile failed: {first_line(e)}"
        graphs = dev.cuda and cmode in ("reduce-overhead", "max-autotune")
        mark_step = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
        for batch in a.batches:
            for io in a.io:
                row = dict(base, io=io, batch=batch)
                if broken:
                    self.row(**row, status="error", reason=broken)
                    continue
                if self.out_of_time():
                    self.row(**row, status="skipped", reason=f"time budget of {a.budget:g} s (--budget) spent")
                    continue
                result, err, oom = None, None, False
                try:
                    result = self.run_config(spec, ref, fn, dt, batch, io, mark_step if graphs else None)
                except Exception as e:  # noqa: BLE001
                    oom = is_oom(e)
                    err = first_line(e)
                    if not oom:
                        traceback.print_exc()
                    del e
                dev.free()
                if result is not None:
                    gmacs = result["customers_per_s"] * spec.macs() / 1e9
                    self.row(**row, status="ok", **result, gmacs=gmacs)
                elif oom:
                    self.row(**row, status="skipped", reason=f"does not fit in device memory: {err}")
                    if mode == "compile":
                        # A failed CUDA-graph recording can leave the compiled function unusable.
                        reset_compiler()
                        try:
                            fn = torch.compile(model, mode=cmode, fullgraph=True)
                        except Exception as e:  # noqa: BLE001
                            broken = f"torch.compile failed after running out of memory: {first_line(e)}"
                else:
                    if mode == "compile" and batch == a.batches[0] and io == a.io[0]:
                        broken = f"compile variant failed at batch {batch}: {err}"
                    self.row(**row, status="error", reason=err)
        del fn, model
        reset_compiler()
        dev.free()

    def run_config(self, spec, ref, fn, dt, batch, io, mark_step):
        dev, dtype = self.dev, DTYPES[dt]
        fake_oom(batch)
        seq_h, st_h = self.host(spec, batch)
        if io == "resident":
            seq = seq_h.to(dev.torch).to(dtype)
            st = st_h.to(dev.torch).to(dtype)

            def call():
                if mark_step:
                    mark_step()
                return fn(seq, st)
        else:
            def call():
                if mark_step:
                    mark_step()
                s = seq_h.to(dev.torch).to(dtype)
                x = st_h.to(dev.torch).to(dtype)
                return tuple(t.float().cpu() for t in fn(s, x))

        with torch.inference_mode():
            result = measure(dev, call, batch, self.a.duration)
            # The variant's outputs (this batch, this compiled graph) against fp32 eager.
            rows = min(batch, 1024)
            got = [t[:rows].float().cpu() for t in call()]
            want = [t.cpu() for t in ref(seq_h[:rows].to(dev.torch), st_h[:rows].to(dev.torch))]
            result["max_abs_err_vs_fp32_eager"] = max_errors(got, want)
            result["finite"] = all(bool(torch.isfinite(t).all()) for t in got)
        return result


def print_row(r: dict):
    head = f"{r['model']:<7} {r['dtype']:<5} {r['mode']:<8} {r['io']:<9} {r['batch']:>7}"
    if r["status"] != "ok":
        print(f"{head}  {r['status']}: {r['reason']}")
        return
    spread = f"{r['customers_per_s_min']:.0f}-{r['customers_per_s_max']:.0f}"
    err = r.get("max_abs_err_vs_fp32_eager")
    note = f"  max err vs fp32 {max(err.values()):.1e}" if err else ""
    if r.get("finite") is False:
        note += "  NON-FINITE OUTPUTS"
    print(f"{head} {r['customers_per_s']:>14.0f} {spread:>25} {r['call_us_p50']:>11.1f} {r['gmacs']:>9.1f} "
          f"{r['first_call_s']:>8.2f}{note}")


def environment(dev: Device, args) -> dict:
    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "device": str(dev.torch),
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import triton  # noqa: F401 (torch.compile's GPU code generator)
        env["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        env["triton"] = None
    if dev.cuda:
        p = torch.cuda.get_device_properties(dev.torch)
        env.update({
            "device_name": p.name,
            "compute_capability": f"{p.major}.{p.minor}",
            "device_memory_gib": round(p.total_memory / 2**30, 1),
            "multiprocessors": p.multi_processor_count,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "driver": nvidia_smi("driver_version"),
        })
    else:
        env["device_name"] = env["cpu"]
    return env


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_smi(query: str):
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
        return out.strip().splitlines()[0] if out.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def csv(kind, choices=None):
    def parse(text):
        items = [kind(x) for x in text.split(",") if x.strip()]
        for x in items:
            if choices is not None and x not in choices:
                raise argparse.ArgumentTypeError(f"{x!r} is not one of {', '.join(choices)}")
            if kind is int and x <= 0:
                raise argparse.ArgumentTypeError("batches are positive")
        if not items:
            raise argparse.ArgumentTypeError("an empty list")
        return items
    return parse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda, cuda:N or cpu (default: cuda when PyTorch sees a GPU)")
    ap.add_argument("--batches", type=csv(int), default=[1, 256, 4096, 65536, 262144])
    ap.add_argument("--duration", type=float, default=1.0, help="timed seconds per configuration (default 1)")
    ap.add_argument("--presets", type=csv(str, list(PRESETS)), default=None,
                    help="built-in presets (default: base, unless --model-info is given)")
    ap.add_argument("--model-info", nargs="+", default=[], metavar="INFO.json",
                    help="models whose shapes come from `ltvx info --json MODEL` (named by their graph)")
    ap.add_argument("--dtypes", type=csv(str, list(DTYPES)), default=["bf16", "fp16", "fp32"])
    ap.add_argument("--modes", type=csv(str, ["eager", "compile"]), default=["compile", "eager"])
    ap.add_argument("--io", type=csv(str, ["resident", "host"]), default=["resident"],
                    help="resident (inputs and outputs on the device) and/or host (end to end from host memory)")
    ap.add_argument("--compile-mode", default="auto",
                    help="torch.compile mode: auto (reduce-overhead on CUDA, default on the CPU), default, "
                         "reduce-overhead, max-autotune, max-autotune-no-cudagraphs")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: its own)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run; configurations not started by then are reported skipped")
    ap.add_argument("--json", help="write one JSON document here (rewritten after every configuration)")
    a = ap.parse_args(argv)
    if not (a.duration > 0 and math.isfinite(a.duration)):
        ap.error("--duration must be a positive number of seconds")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = Device(a.device)
    if dev.cuda and not torch.cuda.is_available():
        print(f"bench-torch: --device {a.device}, but PyTorch {torch.__version__} sees no CUDA GPU "
              f"(built for CUDA {torch.version.cuda})", file=sys.stderr)
        return 2
    if dev.cuda:
        if dev.torch.index is None:
            dev.torch = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev.torch)
        # The best convolution algorithm for each shape, chosen on the first call (outside the timing).
        torch.backends.cudnn.benchmark = True
    if "compile" in a.modes:
        configure_compiler()
    specs = [spec_from_info(p) for p in a.model_info]
    for name in a.presets or ([] if specs else ["base"]):
        if name not in [s.name for s in specs]:
            specs.append(builtin_spec(name))
    r = Runner(a, dev)
    r.doc["config"] = {"batches": a.batches, "duration_s": a.duration, "reps": REPS, "min_reps": MIN_REPS,
                       "dtypes": a.dtypes, "modes": a.modes, "io": a.io,
                       "compile_mode": compile_mode(a.compile_mode, dev) or "default", "budget_s": a.budget,
                       "seed": SEED}
    e = r.doc["environment"]
    where = e.get("device_name")
    if dev.cuda:
        where += f" (compute capability {e['compute_capability']}, {e['device_memory_gib']} GiB, driver {e['driver']})"
    print(f"PyTorch {e['torch']} (CUDA {e['torch_cuda']}, triton {e['triton']}) on {where}; "
          f"timing {a.duration:g} s a configuration; compile mode {r.doc['config']['compile_mode']}")
    print(f"{'model':<7} {'dtype':<5} {'mode':<8} {'io':<9} {'batch':>7} {'customers/s':>14} "
          f"{'spread (min-max)':>25} {'us/call p50':>11} {'GMAC/s':>9} {'first s':>8}")
    r.save()
    for spec in specs:
        r.run_model(spec)
    r.save()
    ok = [x for x in r.doc["rows"] if x["status"] == "ok"]
    print(f"\n{len(ok)} of {len(r.doc['rows'])} configurations measured" + (f"; JSON in {a.json}" if a.json else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
