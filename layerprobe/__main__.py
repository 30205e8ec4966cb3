"""`python -m layerprobe`: the same as the `layerprobe` console script."""

import sys

from layerprobe.cli import main

sys.exit(main())
