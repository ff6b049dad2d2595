"""Recording a module's constructor arguments, so checkpoints can rebuild it without pickling code.

A task stores ``module_spec(encoder)`` — ``{"class_path": ..., "init_args": {...}}``, the same shape as a
LightningCLI YAML entry — in its hyper-parameters, and :func:`build_module` turns it back into a module.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

ModuleOrSpec = nn.Module | Mapping[str, Any]
"""A module, or the ``{"class_path", "init_args"}`` spec that builds it."""

TRUSTED_PREFIXES: tuple[str, ...] = ("ctxir.",)
"""Only classes under these module paths are rebuilt from a checkpoint (no arbitrary code from a file)."""


def _plain(value: Any) -> Any:
    """YAML/JSON-friendly copy: tuples become lists, recursively."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Configurable:
    """Mixin: every subclass records the arguments its ``__init__`` was called with in ``init_args``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__dict__["__init__"]
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: Any, *args: Any, **kw: Any) -> None:
            if "_init_args" not in self.__dict__:  # the most derived class records
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                recorded = dict(list(bound.arguments.items())[1:])
                self.__dict__["_init_args"] = _plain(recorded)
            init(self, *args, **kw)

        cls.__init__ = recording_init  # type: ignore[method-assign]

    @property
    def init_args(self) -> dict[str, Any]:
        """The constructor arguments (defaults filled in)."""
        return dict(self.__dict__["_init_args"])


def module_spec(module: nn.Module) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a :class:`Configurable` module."""
    if not isinstance(module, Configurable):
        raise TypeError(f"{type(module).__name__} does not record its constructor arguments (not Configurable)")
    cls = type(module)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": module.init_args}


def build_module(spec: ModuleOrSpec) -> nn.Module:
    """A module from a :func:`module_spec` dict (a module passes through unchanged)."""
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise TypeError(f"expected an nn.Module or a {{'class_path', 'init_args'}} mapping, got {spec!r}")
    path = str(spec["class_path"])
    if not path.startswith(TRUSTED_PREFIXES):
        raise ValueError(f"refusing to build {path!r}: only classes under {TRUSTED_PREFIXES} are rebuilt")
    module_name, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    return cls(**dict(spec.get("init_args", {})))
