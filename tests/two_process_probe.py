"""One of two processes (``tests/test_sharding.py``), each with 2 host devices: explain
this process's share of 8 images and record where MACO's result lives.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m tests.two_process_probe \\
        COORDINATOR PROCESS_ID OUT.npz
"""

import sys

import jax
import numpy as np

from texter_jax.distributed import initialize

if __name__ == "__main__":
    coordinator, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    group = initialize(coordinator, 2, pid)
    jax.config.update("jax_default_matmul_precision", "highest")
    import texter_jax.explain as ex
    from tests.multi_device_probe import eight_images
    from tests.test_explain import CONFIG

    clf, v, sae, al, text, images = eight_images()
    mine = np.asarray(group.share(list(range(8))))
    arrays = ex.explain_arrays(clf, v, al, text, images[mine], ex.image_keys(3, mine), CONFIG,
                               sae=sae)
    image = arrays.maco.image
    devices = sorted(s.device.id for s in image.addressable_shards)
    rows = [int(s.data.shape[0]) for s in image.addressable_shards]
    local = sorted(d.id for d in jax.local_devices())
    res = ex.explain_batch(clf, v, al, text, images[mine], ex.image_keys(3, mine), CONFIG,
                           sae=sae)
    np.savez(out, mine=mine, devices=devices, local=local, rows=rows, units=res.unit_ids,
             scores=res.concept_scores, image=res.concept_image)
    group.barrier("done")
