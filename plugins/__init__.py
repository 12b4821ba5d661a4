"""anomalib-3d model plugins, importable as ``anomalib_3d_plugins.<name>``.

Each sub-package follows anomalib's per-model layout (``lightning_model.py``, ``torch_model.py``,
``loss.py``, ``README.md``) and is registered by an entry point in ``pyproject.toml``.
"""
