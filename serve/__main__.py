"""`python -m serve --config serve/config.yaml`: see serve/cluster/local.py."""
import sys

from serve.cluster.local import main

if __name__ == "__main__":
    sys.exit(main())
