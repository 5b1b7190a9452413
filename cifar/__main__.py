"""`python -m cifar`: the command line (see cifar/cli.py)."""
import sys

from cifar.cli import main

sys.exit(main())
