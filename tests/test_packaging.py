"""`pip install .` gives a working library: the wheel is built from a copy of the sources and
installed into a fresh virtual environment, which is then used from a folder outside the
repository (imports, the three commands, the packaged configs, one tiny fit).

The fresh environment sees the packages of this test's environment through a .pth file (so
nothing is downloaded; the wheel is installed with --no-deps), but not this checkout: its
editable install is a .pth *hook* in this environment's site-packages, which Python runs only
for site-packages folders of its own, and the test checks that `neurosql_pl` comes from the
wheel. pip runs with --no-index and without its version check: nothing touches the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.helpers.cli_args import REPO
from tests.helpers.idx_files import write_mnist_idx

PIP = ["-m", "pip", "--disable-pip-version-check", "--no-input"]


def _setuptools_builds_wheels() -> bool:
    """setuptools ≥ 70.1 builds wheels on its own (older ones need the `wheel` package)."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)


def copy_sources(dest: Path) -> Path:
    """pyproject.toml, README.md and the folders its package-dir maps, into `dest` (a clean
    tree: no build/ or *.egg-info left over from other builds)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    dest.mkdir()
    for name in ("pyproject.toml", pyproject["project"]["readme"]):
        shutil.copy2(REPO / name, dest / name)
    for folder in set(pyproject["tool"]["setuptools"]["package-dir"].values()):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def shared_site_packages() -> list[str]:
    """The site-packages folders this interpreter imports from (its own, and any a .pth adds)."""
    return [p for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the wheel, make a fresh venv that sees this environment's packages, install it."""
    if not _setuptools_builds_wheels():
        pytest.skip("needs setuptools >= 70.1 (pinned in requirements.txt; run `make install`)")
    root = tmp_path_factory.mktemp("packaging")
    env = clean_env()
    source = copy_sources(root / "source")
    dist = root / "dist"
    run([sys.executable, *PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source)], env, root)
    (wheel,) = dist.glob("neurosql_pl-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env, root)
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env, root).strip())
    (site / "shared_packages.pth").write_text("\n".join(shared_site_packages()) + "\n")
    run([str(python), *PIP, "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)], env, root)
    outside = root / "elsewhere"
    outside.mkdir()
    return {"wheel": wheel, "venv": venv, "site": site, "cwd": outside}


def clean_env() -> dict[str, str]:
    """This environment minus anything that would put the checkout on the fresh venv's path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}


def run(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    """Run `command`; its stdout, or a test failure showing its output."""
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def test_the_wheel_holds_the_library_its_configs_and_commands(installed):
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
        entry_points = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for kind, name in (("data", "mnist"), ("model", "neurosql_mse"), ("trainer", "default")):
        assert f"neurosql_pl/configs/{kind}/{name}.yaml" in names
    assert {"neurosql_pl/configs/__init__.py", "neurosql_pl/datamodules/mnist.py", "neurosql_pl/cli.py"} <= names
    assert not any(n.startswith(("tests/", "experiments/", "datamodules/")) for n in names)
    for line in (
        "neurosql = neurosql_pl.cli:console_main",
        "neurosql-evaluate = neurosql_pl.evaluate:main",
        "neurosql-prepare = neurosql_pl.datamodules.prepare:main",
    ):
        assert line in entry_points


# Run by the fresh venv's python, outside the repository: where the modules come from, the
# packaged configs, the three console scripts' targets, `neurosql fit --help`, and
# `neurosql-prepare mnist` (both in this one process: each process start costs seconds).
CHECK_INSTALLED = """
import contextlib, importlib.metadata, io, sys
import neurosql_pl, neurosql_pl.datamodules, neurosql_pl.configs as configs
from neurosql_pl.cli import main
from neurosql_pl.datamodules.prepare import CONFIG_DIR
scripts = {ep.name: ep.load() for ep in importlib.metadata.entry_points(group="console_scripts")
           if ep.module.startswith("neurosql_pl")}
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
    main(["fit", "--help"])
status = scripts["neurosql-prepare"](["mnist", "--data.data_dir", sys.argv[1], "--data.download", "false"])
print(neurosql_pl.__file__, neurosql_pl.datamodules.__file__, configs.config_path("data", "mnist"), CONFIG_DIR)
print(" ".join(configs.available("model")))
print(" ".join(sorted(scripts)), "--config" in help_text.getvalue(), status)
"""


def test_the_installed_package_imports_from_the_wheel_and_finds_its_configs(installed, tmp_path):
    data = tmp_path / "data"
    write_mnist_idx(data, n_train=32, n_test=8)
    python = installed["venv"] / "bin" / "python"
    out = run([str(python), "-c", CHECK_INSTALLED, str(data)], clean_env(), installed["cwd"]).splitlines()
    assert "mnist: data ready" in out[0]  # what neurosql-prepare printed
    paths, models, checks = out[-3:]
    site = installed["site"].resolve()
    for path in paths.split():
        assert Path(path).resolve().is_relative_to(site), path  # the wheel's copy, not the checkout
    assert {"neurosql_mse", "neurosql_lpips", "vae", "gan", "ddpm"} <= set(models.split())
    assert checks == "neurosql neurosql-evaluate neurosql-prepare True 0"


def test_the_neurosql_command_fits_from_packaged_configs_outside_the_repository(installed, tmp_path):
    """One tiny fit with the config pieces named by their short names (trainer/default, ...)."""
    data, run_dir = tmp_path / "data", tmp_path / "run"
    write_mnist_idx(data, n_train=32, n_test=8)
    command = [
        str(installed["venv"] / "bin" / "neurosql"), "fit",
        "--config", "trainer/default", "--config", "model/neurosql_mse", "--config", "data/mnist",
        "--trainer.default_root_dir", str(run_dir), "--trainer.max_epochs", "1",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--data.data_dir", str(data), "--data.batch_size", "16", "--data.download", "false",
        "--model.block_size", "16", "--model.generator_width", "8",
        "--model.lattice_cache_dir", str(tmp_path / "lattices"),
    ]
    run(command, clean_env(), installed["cwd"], timeout=300)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


# `sys.modules["IPython"] = None` makes every `import IPython` fail, as if it were not installed.
WITHOUT_IPYTHON = """
import sys
sys.modules["IPython"] = None
import torch
from neurosql_pl.perceptual import build_perceptual
features = build_perceptual("stlpips-alex")
x = torch.rand(2, 3, 32, 32) * 2 - 1
print(sys.modules["IPython"] is None, features.distance(x, x).abs().max().item(), features.distance(x, x.flip(0)).min().item() > 0)
"""


def test_stlpips_loads_without_ipython():
    """stlpips_pytorch runs `from IPython import embed` although IPython is no dependency: the
    library stands in for it while stlpips loads, and leaves sys.modules as it found it."""
    done = subprocess.run([sys.executable, "-c", WITHOUT_IPYTHON], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "0.0", "True"]
