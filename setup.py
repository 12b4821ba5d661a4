"""Install the tiny ``.pth`` hook next to the package.

anomalib 2.7 has no plugin entry points of its own. A ``.pth`` file in site-packages runs one
cheap import at interpreter start that only *arms* a post-import hook (stdlib only); the plugins
themselves are imported when ``anomalib.models`` / ``anomalib.data`` finish importing. setuptools
cannot place a file at the root of site-packages from ``pyproject.toml`` alone, hence this file.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH_NAME = "anomalib_3d_plugins_hook.pth"
PTH_LINE = "import anomalib_3d._hook; anomalib_3d._hook.install()\n"


class BuildPyWithHook(build_py):
    """``build_py`` that also writes the hook ``.pth`` into the wheel's root."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / PTH_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH_NAME)]


try:  # setuptools >= 64 (PEP 660 editable installs)
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # pragma: no cover - very old setuptools: no editable wheels at all
    editable_wheel = None


if editable_wheel is not None:

    class EditableWheelWithHook(editable_wheel):
        """``pip install -e .`` builds its own wheel without ``build_py`` outputs: add the hook."""

        def _select_strategy(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            strategy = super()._select_strategy(*args, **kwargs)

            return _StrategyWithHook(strategy)


class _StrategyWithHook:
    """Wraps a setuptools editable strategy (a context manager + callable) to also write the hook."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self._inner = inner

    def __call__(self, wheel, files, mapping) -> None:  # noqa: ANN001
        self._inner(wheel, files, mapping)
        wheel.writestr(PTH_NAME, PTH_LINE)

    def __enter__(self):  # noqa: ANN204
        self._inner.__enter__()
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self._inner.__exit__(*exc)


cmdclass = {"build_py": BuildPyWithHook}
if editable_wheel is not None:
    cmdclass["editable_wheel"] = EditableWheelWithHook

PACKAGES = [
    *find_packages(include=["anomalib_3d", "anomalib_3d.*"]),
    "anomalib_3d_plugins",
    *(f"anomalib_3d_plugins.{p}" for p in find_packages(where="plugins")),
]

setup(
    cmdclass=cmdclass,
    packages=PACKAGES,
    package_dir={"anomalib_3d_plugins": "plugins"},
)
