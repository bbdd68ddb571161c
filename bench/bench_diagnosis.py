"""How long one diagnosis takes on long runs: Engine.evaluate on 1k, 100k and 1M-step histories.

Each history has 152 channels (3 loss, 129 gradient layers, 4 gradient summaries, 7 output
statistics, 6 settings, 3 timings), one epoch summary per 1000 steps and a data set report.
Between two timed evaluations one new step is appended, as in a live UI refresh, so every
timed call does the full work (an unchanged history is answered from the engine's cache; that
case is timed separately). Prints the median and 95th percentile per evaluation.

Run: .venv/bin/python bench/bench_diagnosis.py [--evaluations 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from octa_tui.diagnosis import Engine, evaluate_rules, match_matrix
from octa_tui.protocol.messages import DatasetReport, EpochSummary, ModelSummary, Schema, StepChunk
from octa_tui.protocol.run import RunHistory

RUN = "00000000000000be"
LAYERS = tuple(f"layer{i:03d}" for i in range(129))
STEPS_PER_EPOCH = 1000


def make_schema() -> Schema:
    schema = Schema(
        run_id=RUN,
        task="segmentation",
        model=ModelSummary("UNet", 7_800_000),
        loss=("total", "bce", "dice"),
        grad=LAYERS,
        gradstat=("total_norm", "n_over_bound", "max_param_norm", "nonfinite"),
        out=("raw_min", "raw_max", "raw_mean", "act_min", "act_max", "act_mean", "frac_outside_01"),
        opt=("lr", "bce_weight", "dice_weight", "pos_weight", "clip", "update_ratio"),
        time=("step_s", "samples_per_s", "memory_mb"),
        config={"loss": "dice_bce", "train_images": 400, "epochs": 2000, "steps_per_epoch": STEPS_PER_EPOCH},
    )
    assert schema.width == 152, schema.width
    return schema


def rows(schema: Schema, start: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible step vectors: a decaying loss, layer norms 1e-3..1e-1, settings in force."""
    s = np.arange(start, start + n, dtype=np.float64)
    v = np.empty((n, schema.width), dtype=np.float32)
    decay = np.exp(-s / 200_000.0)
    v[:, 0] = 0.3 + 0.5 * decay + 0.01 * rng.standard_normal(n)
    v[:, 1] = 0.05 + 0.6 * decay + 0.005 * rng.standard_normal(n)
    v[:, 2] = 0.37 + 0.5 * decay + 0.01 * rng.standard_normal(n)
    g = 3 + len(LAYERS)
    v[:, 3:g] = np.geomspace(0.05, 0.005, len(LAYERS)) * np.exp(0.2 * rng.standard_normal((n, len(LAYERS))))
    v[:, g : g + 4] = (0.3, 0.0, 0.6, 0.0)
    v[:, g + 4 : g + 11] = (-7.0, 5.0, -2.0, 0.001, 0.993, 0.12, 0.0)
    v[:, g + 11 : g + 17] = (1e-3, 0.3, 0.7, 1.0, 0.0, 1e-3)
    v[:, g + 17 :] = (0.05, 160.0, 900.0)
    return v


def make_history(steps: int, rng: np.random.Generator) -> RunHistory:
    schema = make_schema()
    history = RunHistory(schema)
    chunk = 100_000
    for start in range(0, steps, chunk):
        n = min(chunk, steps - start)
        idx = np.arange(start, start + n)
        history.add(
            StepChunk(
                RUN,
                idx.astype(np.uint64),
                idx.astype(np.int64),
                (idx // STEPS_PER_EPOCH).astype(np.int32),
                1.7e9 + idx * 0.01,
                rows(schema, start, n, rng),
            )
        )
    for e in range(steps // STEPS_PER_EPOCH):
        loss = 0.3 + 0.5 * np.exp(-(e + 1) * STEPS_PER_EPOCH / 200_000.0)
        history.add(
            EpochSummary(
                RUN,
                e,
                (e + 1) * STEPS_PER_EPOCH - 1,
                1.7e9,
                {"loss": loss},
                {"loss": loss + 0.02, "dice": 0.8},
            )
        )
    history.add(
        DatasetReport(
            RUN,
            "bench",
            500,
            2,
            (0.0, 255.0),
            0.1,
            (0.1,),
            9.0,
            train_images=400,
            val_images=100,
            target_mean=0.1,
            target_var=0.09,
        )
    )
    return history


def time_calls(
    call, history: RunHistory, schema: Schema, evaluations: int, rng: np.random.Generator, append: bool
) -> list[float]:
    times = []
    n = len(history.steps)
    for i in range(evaluations):
        if append:
            history.steps.append(
                n + i, n + i, (n + i) // STEPS_PER_EPOCH, 1.7e9, rows(schema, n + i, 1, rng)[0]
            )
        t0 = time.perf_counter()
        call(history)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'steps':>9} {'channels':>8} {'what':<34} {'median ms':>10} {'p95 ms':>8}")
    for steps in (1_000, 100_000, 1_000_000):
        t0 = time.perf_counter()
        history = make_history(steps, rng)
        built = time.perf_counter() - t0
        schema = history.schema
        engine = Engine()
        cases = [
            ("Engine.evaluate (one new step each)", engine.evaluate, True),
            ("Engine.evaluate (unchanged: cached)", engine.evaluate, False),
            ("evaluate_rules (raw, no hysteresis)", evaluate_rules, True),
            ("match_matrix", match_matrix, True),
        ]
        for name, call, append in cases:
            call(history)  # warm-up
            times = time_calls(call, history, schema, args.evaluations, rng, append)
            median = statistics.median(times) * 1e3
            p95 = float(np.percentile(times, 95)) * 1e3
            print(f"{steps:>9} {schema.width:>8} {name:<34} {median:>10.3f} {p95:>8.3f}")
        print(
            f"{'':>9} {'':>8} (history built in {built:.1f} s; verdicts: {[v.code for v in engine.evaluate(history)]})"
        )


if __name__ == "__main__":
    main()
