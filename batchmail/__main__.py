import sys

from batchmail.cli import main

# Guarded: worker processes (build_pool.py) import the main module again under another name.
if __name__ == "__main__":
    sys.exit(main())
