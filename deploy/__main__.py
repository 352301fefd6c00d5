"""`python -m deploy render`: regenerate deploy/k8s/* and the Grafana dashboard from a serve config."""
import argparse
import sys
from pathlib import Path

from deploy.render import DEFAULT_CONFIG, DEPLOY_DIR, render, stale_files, write
from deploy.security import Access
from deploy.variants import IMAGE_REPOSITORY


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser("render", help="write the generated files under deploy/")
    render_cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    render_cmd.add_argument("--image-repository", default=IMAGE_REPOSITORY,
                            help="where the cluster pulls the image from, e.g. ghcr.io/you/resfam-serve")
    render_cmd.add_argument("--out", type=Path, default=DEPLOY_DIR,
                            help="output folder (default deploy/; use another one for a registry-specific copy)")
    render_cmd.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    default = Access()
    network = render_cmd.add_argument_group("NetworkPolicy", "who may reach the Ray pods besides each other")
    network.add_argument("--client-namespace", action="append", default=[], metavar="NS",
                         help="admit port 8000 from this namespace too (repeatable; this namespace always)")
    network.add_argument("--prometheus-namespace", default=default.prometheus_namespace, metavar="NS")
    network.add_argument("--prometheus-pod-label", action="append", type=_label, metavar="KEY=VALUE",
                         help=f"labels of the Prometheus pods (repeatable; default {_labels(default.prometheus_pods)})")
    network.add_argument("--kuberay-namespace", default=default.kuberay_namespace, metavar="NS")
    args = parser.parse_args(argv)
    access = Access(client_namespaces=tuple(args.client_namespace), prometheus_namespace=args.prometheus_namespace,
                    prometheus_pods=dict(args.prometheus_pod_label or default.prometheus_pods.items()),
                    kuberay_namespace=args.kuberay_namespace)
    rendered = render(args.config, args.image_repository, access)
    stale = stale_files(rendered, args.out)
    if args.check:
        for rel in stale:
            print(f"stale: deploy/{rel}", file=sys.stderr)
        return 1 if stale else 0
    write(rendered, args.out)
    print(f"wrote {len(rendered)} files under {args.out} ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
