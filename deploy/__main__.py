"""`python -m deploy render`: regenerate deploy/k8s/* and the Grafana dashboard from a serve config."""
import argparse
import sys
from pathlib import Path

from deploy.render import DEFAULT_CONFIG, DEPLOY_DIR, render, stale_files, write
from deploy.variants import IMAGE_REPOSITORY


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
    args = parser.parse_args(argv)
    rendered = render(args.config, args.image_repository)
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
