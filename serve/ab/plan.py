"""python -m serve.ab.plan --baseline 0.90 --min-difference 0.02 --rate 5: labels and time an A/B experiment needs."""
from __future__ import annotations

import argparse
import json

from serve.ab.planning import duration, plan
from serve.ab.sequential import DEFAULT_TAU


def weights(text: str) -> tuple[float, float]:
    try:
        a, b = (float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"weights must be two numbers like 50,50, got {text!r}") from None
    return a, b


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.ab.plan", description=__doc__)
    parser.add_argument("--baseline", type=float, required=True, help="accuracy of arm A (the current model)")
    parser.add_argument("--min-difference", type=float, required=True,
                        help="smallest accuracy_b - accuracy_a worth detecting (e.g. 0.02 for 2 points)")
    parser.add_argument("--rate", type=float, required=True, help="feedback labels per second, all arms together")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--weights", type=weights, default=(50.0, 50.0), help="traffic weights of A,B (default 50,50)")
    parser.add_argument("--tau", type=float, default=DEFAULT_TAU, help="prior scale of the sequential test")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args(argv)
    try:
        result = plan(args.baseline, args.min_difference, args.rate, args.alpha, args.power, args.weights, args.tau)
    except ValueError as error:
        parser.error(str(error))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    fixed, seq = result["fixed"], result["sequential"]
    print(f"To tell {args.baseline:.1%} from {args.baseline + args.min_difference:.1%} "
          f"(alpha {args.alpha}, power {args.power}, weights {args.weights[0]:g}/{args.weights[1]:g}, "
          f"{args.rate:g} labels/s):")
    print(f"  fixed-sample test: {fixed['labels_per_arm'][0]} + {fixed['labels_per_arm'][1]} = {fixed['labels']} labels, "
          f"{duration(fixed['seconds'])}; read it ONCE, at that size")
    print(f"  sequential test:   mean {seq['mean_labels']:.0f} labels ({duration(seq['mean_seconds'])}), "
          f"median {seq['median_labels']:.0f} ({duration(seq['median_seconds'])}), 90% within {seq['p90_labels']:.0f}; "
          f"decides for B in {seq['decided_right']:.0%} of {seq['experiments']} simulated runs; read it any time")


if __name__ == "__main__":
    main()
