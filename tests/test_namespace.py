"""One import namespace: everything installed is ``texter_jax.<...>``, so a research
repository's own ``train/``, ``eval/``, ``apps/`` or ``converters/`` cannot shadow ours
(or be shadowed by ours).

From a directory holding such decoy packages (each raises on import), the command line
and every module of the package still work; from the repository root, the installed
names resolve to the repository's folders (``converters/`` is ``texter_jax.converters``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DECOYS = ("train", "eval", "apps", "converters", "cli", "world", "bench", "models")
MAPPED = ("cli", "converters", "train", "eval", "world")
TEXTER = Path(sys.executable).parent / "texter"


@pytest.fixture(scope="module")
def decoy_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("research_repo")
    for name in DECOYS:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(
            f"raise ImportError('the user repository\\'s own {name}/ was imported')\n")
    (root / "train.py").write_text("raise ImportError('the user\\'s train.py was imported')\n")
    return root


def _run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = "."  # as `python -m` from the research repository would see it
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_the_decoys_do_shadow_top_level_names(decoy_dir):
    # the guard of this file's other tests: from decoy_dir, `import train` is the user's.
    proc = _run([sys.executable, "-c", "import train"], decoy_dir)
    assert proc.returncode != 0 and "was imported" in proc.stderr


def test_cli_help_and_explain_help_beside_decoys(decoy_dir):
    for args in ([str(TEXTER), "--help"], [str(TEXTER), "explain", "--help"],
                 [sys.executable, "-m", "texter_jax.cli", "demo", "--help"]):
        proc = _run(args, decoy_dir)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert "usage:" in proc.stdout


def test_every_module_imports_beside_decoys(decoy_dir):
    code = (
        "import importlib, pkgutil, sys\n"
        # an editable install keeps the mapped folders out of texter_jax.__path__, so
        # each installed top package is walked from its own path
        f"tops = ['texter_jax'] + ['texter_jax.' + p for p in {MAPPED!r}]\n"
        "names = sorted({m.name for top in tops for m in pkgutil.walk_packages(\n"
        "    importlib.import_module(top).__path__, top + '.')\n"
        "    if not m.name.endswith('__main__')} | set(tops))\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"ours = [n for n in sys.modules if n.split('.')[0] in {DECOYS!r}]\n"
        "assert not ours, ours\n"
        "print(len(names))\n")
    proc = _run([sys.executable, "-c", code], decoy_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 150, proc.stdout


def test_convert_beside_decoys(decoy_dir, tmp_path):
    import torch
    import torchvision

    torch.manual_seed(0)
    pth = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(), pth)
    proc = _run([str(TEXTER), "convert", str(pth), str(tmp_path / "out")], decoy_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "texter_config.json").is_file()


def test_repository_root_sees_the_installed_modules():
    import texter_jax.cli.main
    import texter_jax.converters.api
    import texter_jax.eval.metrics
    import texter_jax.train.sae_train
    import texter_jax.world.demo

    for module, folder in ((texter_jax.cli.main, "cli"), (texter_jax.converters.api, "converters"),
                           (texter_jax.eval.metrics, "eval/metrics"),
                           (texter_jax.train.sae_train, "train"),
                           (texter_jax.world.demo, "world")):
        assert Path(module.__file__).parent == REPO / folder, module.__file__
    assert not [n for n in sys.modules if n.split(".")[0] in ("apps", "converters", "train",
                                                                 "eval", "world", "cli")]
