"""Shared test setup: fp32 at the highest matmul precision, so parity tolerances mean
what they say (TF32-like fast paths would otherwise dominate the error)."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
# libtpu (test extra: the TPU compiler) probes for a TPU when a backend starts; these
# machines have none, and the planner's TPU topologies do not need the TPU backend.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from texter_jax.plan.targets import quiet_libtpu  # noqa: E402

quiet_libtpu()  # and let test processes load it side by side

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drops JAX's compiled programs after each test module.

    Every XLA:CPU executable keeps about six memory mappings while it is cached; the
    whole suite compiles thousands of programs in one process, and past the kernel's
    ``vm.max_map_count`` (65530 here) the next compile crashes the process (SIGSEGV or
    SIGABRT inside ``backend_compile``). A module's programs are not reused by the next.
    """
    yield
    jax.clear_caches()
    gc.collect()


# The quick subset, `./dev test -m fast` (under a minute on 2 CPU cores; DEVELOPING.md):
# unit tests of the core's stages, the world's scenes and the metrics, small models only.
FAST = ("test_architecture.py", "test_lint.py", "test_capture.py", "test_concepts.py",
        "test_spectrum.py", "test_sae.py", "test_contributions.py", "test_mapping.py",
        "eval/test_hits.py",
        "world/test_generator.py", "world/test_interventions.py", "world/test_controls.py")


def pytest_collection_modifyitems(config, items):
    root = config.rootpath / "tests"
    for item in items:
        try:
            rel = item.path.relative_to(root).as_posix()
        except ValueError:
            continue
        if rel in FAST:
            item.add_marker(pytest.mark.fast)
