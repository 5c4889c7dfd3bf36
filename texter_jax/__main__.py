import sys

from texter_jax.cli import main

sys.exit(main())
