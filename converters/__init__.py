"""PyTorch / Hugging Face -> Flax converters (need the ``[convert]`` extra).

Each family has one module with an explicit key table (torch key -> Flax path and
transform); ``texter_jax.converters.api.convert`` picks it from the checkpoint and writes an
Orbax model folder with :func:`texter_jax.io.checkpoints.save_model`.
"""
