"""How fast the synthetic generators draw, and the parameter counts of the models at common widths.

Prints the best of three wall-clock timings for 1000 images of 64x64 per generator variant
(the demo and the fault scenarios draw their data with these at start-up).
"""

from __future__ import annotations

import time

from octa_tui.trainer.synthetic import synthetic_heatmaps, synthetic_vessels


def _best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    n, size = 1000, 64
    cases = {
        "vessels (binary, normal foreground)": lambda: synthetic_vessels(n, size),
        "vessels (soft masks)": lambda: synthetic_vessels(n, size, soft_masks=True),
        "vessels (low foreground)": lambda: synthetic_vessels(n, size, foreground="low"),
        "text heatmaps": lambda: synthetic_heatmaps(n, size),
    }
    print(f"{'generator':<38} {'1000 x 64x64':>12} {'images/s':>10}")
    for name, fn in cases.items():
        seconds = _best_of(fn)
        print(f"{name:<38} {seconds:>11.3f}s {n / seconds:>10.0f}")

    from octa_tui.trainer.models import CraftLike, PlainSigmoidCNN, UNet, UNet_Transformer, count_parameters

    print(f"\n{'model':<40} {'parameters':>12}")
    for name, model in (
        ("UNet(base_width=64)", UNet(base_width=64)),
        ("UNet_Transformer(base_width=64)", UNet_Transformer(base_width=64)),
        ("UNet(base_width=16)", UNet(base_width=16)),
        ("UNet_Transformer(base_width=16)", UNet_Transformer(base_width=16)),
        ("CraftLike(base_width=16)", CraftLike(base_width=16)),
        ("PlainSigmoidCNN(depth=12, width=16)", PlainSigmoidCNN()),
    ):
        print(f"{name:<40} {count_parameters(model):>12,}")


if __name__ == "__main__":
    main()
