"""SPEX core speed: spex-ray next to the reference (sparse-transform 0.2.1), same functions, one run.

    python benchmarks/bench_core.py            # sets up the reference's own venv on first use
    python benchmarks/bench_core.py --no-reference

Cases (issue 2): decode at n = 1000, b = 6, t = 5 with 20 planted terms (hard and soft, warm);
a fresh process (import, design, masks, first decode); soft decoding of noisy values at n = 256,
σ = 1; mask generation at n = 1000, b = 8; peak memory of the n = 1000, b = 8 case. Warm figures
are the fastest of ``--repeat`` runs, as the reference's are (its first call pays JIT and BCH set-up).
Prints a Markdown table: ours, reference, and reference / ours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from planted import evaluate_fourier, planted_fourier  # noqa: E402

from benchmarks.reference import ensure_reference_env, run_reference  # noqa: E402
from spex_ray import SpexDesign, decode, faithfulness, uniform_masks  # noqa: E402

FRESH_PROCESS = """
import time, json, sys
start = time.perf_counter()
sys.path[:0] = {paths!r}
import numpy as np
from spex_ray import SpexDesign, decode
from planted import evaluate_fourier, planted_fourier
truth = planted_fourier(1000, 20, 5, seed=0)
design = SpexDesign(1000, 6)
values = evaluate_fourier(truth, design.masks())
result = decode(design, values, "hard")
print(json.dumps({{"seconds": time.perf_counter() - start, "exact": set(result) == set(truth)}}))
"""

PEAK_MEMORY = """
import resource, json, sys
sys.path[:0] = {paths!r}
from spex_ray import SpexDesign, decode
from planted import evaluate_fourier, planted_fourier
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
design = SpexDesign(1000, 8)
values = evaluate_fourier(planted_fourier(1000, 100, 5, seed=0), design.masks())
decode(design, values, "soft", refit="ls")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"peak_mb": after / 1024, "baseline_mb": before / 1024}}))
"""


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def terms_json(truth: dict) -> tuple[list, float]:
    return [[list(k), v] for k, v in truth.items() if k], truth.get((), 0.0)


def ours_planted(n, b, truth, decoder, sigma, repeat, seed=0):
    design = SpexDesign(n, b)
    noise = np.random.default_rng(seed).standard_normal(design.num_queries) * sigma

    def run():
        values = evaluate_fourier(truth, design.masks()) + noise
        return decode(design, values, decoder)

    values = evaluate_fourier(truth, design.masks()) + noise
    decode_s, _ = best_of(repeat, lambda: decode(design, values, decoder))
    total_s, result = best_of(repeat, run)
    holdout = uniform_masks(n, 1000, seed=12345)
    r2 = faithfulness(result, holdout, evaluate_fourier(truth, holdout))
    return {"decode_s": decode_s, "total_s": total_s, "r2": r2, "exact": set(result) == set(truth)}


def reference_planted(n, b, truth, decoder, sigma, repeat, use_reference):
    if not use_reference:
        return None
    terms, constant = terms_json(truth)
    job = {"case": "planted", "n": n, "b": b, "t": 5, "terms": terms, "constant": constant,
           "noise_sigma": sigma, "seed": 0, "decoder": decoder, "repeat": repeat}
    return run_reference(job, timeout_s=1800)


def subprocess_json(code: str) -> dict:
    paths = [str(ROOT), str(ROOT / "tests")]
    out = subprocess.run([sys.executable, "-c", code.format(paths=paths)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(name, ours, reference, note=""):
    ratio = f"{reference / ours:.0f}×" if reference and ours else "—"
    ref = f"{reference:.3f} s" if reference else "not run"
    return f"| {name} | {ours:.4f} s | {ref} | {ratio} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-reference", action="store_true", help="measure spex-ray only")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    use_reference = not args.no_reference
    if use_reference:
        ensure_reference_env()

    rows = ["| case | spex-ray | reference | reference / spex-ray | notes |", "|---|---|---|---|---|"]
    truth = planted_fourier(1000, 20, 5, seed=0)
    for decoder in ("hard", "soft"):
        ours = ours_planted(1000, 6, truth, decoder, 0.0, args.repeat)
        ref = reference_planted(1000, 6, truth, decoder, 0.0, args.repeat, use_reference)
        rows.append(row(f"decode n=1000 b=6 20 terms, {decoder} (decoder only, warm)", ours["decode_s"],
                        ref and ref["decode_warm_s"], f"exact support: ours {ours['exact']}"))
        rows.append(row(f"masks+values+decode n=1000 b=6, {decoder} (warm)", ours["total_s"], ref and ref["warm_s"],
                        f"R² ours {ours['r2']:.4f}" + (f", ref {ref['r2_holdout']:.4f}" if ref else "")))
        if decoder == "hard":
            fresh = subprocess_json(FRESH_PROCESS)
            rows.append(row("fresh process: import, design, masks, first decode", fresh["seconds"], ref and ref["cold_s"],
                            f"exact: {fresh['exact']}"))

    noisy = planted_fourier(256, 20, 5, seed=1)
    for decoder in ("hard", "soft"):
        ours = ours_planted(256, 6, noisy, decoder, 1.0, args.repeat)
        ref = reference_planted(256, 6, noisy, decoder, 1.0, 2, use_reference)
        rows.append(row(f"n=256 b=6 σ=1 noise, {decoder} (warm, masks+values+decode)", ours["total_s"],
                        ref and ref["warm_s"],
                        f"R² ours {ours['r2']:.4f}" + (f", ref {ref['r2_holdout']:.4f}" if ref else "")))

    masks_s, _ = best_of(args.repeat, lambda: SpexDesign(1000, 8).masks())
    ref_masks = run_reference({"case": "masks", "n": 1000, "b": 8, "t": 5}) if use_reference else None
    rows.append(row("masks n=1000 b=8 (43,008 masks, incl. design)", masks_s,
                    ref_masks and ref_masks["design_s"] + ref_masks["masks_s"]))
    memory = subprocess_json(PEAK_MEMORY)
    print("\n".join(rows))
    print(f"\nPeak RSS of design + masks + values + soft decode + LS refit at n=1000, b=8, 100 terms: "
          f"{memory['peak_mb']:.0f} MB (process after imports: {memory['baseline_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
