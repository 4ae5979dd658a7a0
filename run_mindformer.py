"""mindkit entrypoint, MindFormers-compatible: python run_mindformer.py --config <yaml> --run_mode predict ..."""
import sys

from mindkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
