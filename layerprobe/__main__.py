import sys

from layerprobe.cli import main

sys.exit(main())
