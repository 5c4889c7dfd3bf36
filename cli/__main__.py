import sys

from texter_jax.cli.main import main

sys.exit(main())
