"""The top floor: the ``texter`` command line.

Everything argparse-shaped lives here; each subcommand parses its flags (their defaults
read from the config dataclasses) and calls the floors below: the core
(:mod:`texter_jax`), :mod:`texter_jax.converters`, :mod:`texter_jax.train`,
:mod:`texter_jax.eval` and :mod:`texter_jax.world`. Nothing below imports this package.
"""
