"""The command lines (``nfnet-*``), one module each with ``main(argv=None) -> int``.

Installed as console scripts (setup.py) through :mod:`nfnet_jax.commands.entry`;
``scripts/<name>.py`` are thin wrappers over the same modules. Flags share one
style (:mod:`nfnet_jax.commands.base`).
"""
