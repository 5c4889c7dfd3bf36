"""The apps floor: the ``texter`` command line and the dispatch between file formats.

Everything argparse-shaped and every choice between file formats (a release ``.pth`` or
one of our folders) lives here or in the other app packages beside it (``converters/``,
``train/``, ``eval/``). They import the library, ``texter_jax/``, never the reverse.
"""
