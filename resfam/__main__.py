"""`python -m resfam` runs the same CLI as the `resfam` console script."""
from resfam.cli import main

raise SystemExit(main())
