"""Size of the few-cluster inference methods at design F (issue 5, section 6): writes bench/inference_size.json.

Design F is the synth DGP with no effect (S0) on the shipped registry's real NC+SC treated counties.
For each draw it fits the TWFE logit and the stop-weighted linear model and records whether CR1, the
score bootstrap (logit), the wild cluster restricted bootstrap (linear) and randomization inference
reject H0: no effect at 5%. The same harness runs in `make test` at R = 200 with fewer permutations
(tests/test_monte_carlo.py); this script is the full-size measurement.

Usage: OPENBLAS_NUM_THREADS=1 python bench/inference_size.py [--draws 500] [--ri-draws 999] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--boot-draws", type=int, default=999)
    parser.add_argument("--ri-draws", type=int, default=999)
    parser.add_argument("--out", type=Path, default=HERE / "inference_size.json")
    args = parser.parse_args()
    from stopdisparity.montecarlo import inference_size

    started = time.perf_counter()
    size = inference_size(draws=args.draws, boot_draws=args.boot_draws, ri_draws=args.ri_draws)
    size["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(size, indent=2) + "\n")
    print(f"design F, S0, R = {size['draws']}, alpha = {size['alpha']} ({size['seconds']} s) -> {args.out}")
    for m in size["methods"]:
        flag = (
            ""
            if m["method"].endswith("cr1")
            else ("  (<= 0.10: met)" if m["rejection_rate"] <= 0.10 else "  (> 0.10: NOT met)")
        )
        print(
            f"  {m['method']:<12} rejection {m['rejection_rate']:.3f} (MCSE {m['mcse_rejection']:.3f}){flag}"
        )


if __name__ == "__main__":
    main()
