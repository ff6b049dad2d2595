"""Recording a module's constructor arguments, so checkpoints can rebuild it without pickling code.

A task stores ``module_spec(encoder)`` — ``{"class_path": ..., "init_args": {...}}``, the same shape as a
LightningCLI YAML entry — in its hyper-parameters, and :func:`build_module` turns it back into a module.

A spec read from a checkpoint is data from a file, so it must not be able to run arbitrary code: only the
``nn.Module`` classes on an explicit allow-list are rebuilt — the project's encoder, decoders and context
module (:data:`BUILTIN_MODULES`) and classes a user registers deliberately with :func:`register_module`.
Anything else is refused (:class:`UntrustedModuleError`) before it is imported or called.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from torch import nn

ModuleOrSpec = nn.Module | Mapping[str, Any]
"""A module, or the ``{"class_path", "init_args"}`` spec that builds it."""

BUILTIN_MODULES: tuple[str, ...] = (
    "ctxir.nn.point_transformer.PointTransformerUNet",
    "ctxir.nn.decoders.UDFDecoder",
    "ctxir.nn.decoders.PlanePriorUDFDecoder",
    "ctxir.nn.decoders.SemanticDecoder",
    "ctxir.nn.context.ContextModule",
)
"""Class paths of the project's modules that specs may name (as :func:`module_spec` writes them)."""
PUBLIC_ALIASES: dict[str, str] = {f"ctxir.nn.{path.rpartition('.')[2]}": path for path in BUILTIN_MODULES}
"""Their public names (``ctxir.nn.UDFDecoder``, as the configs write them) → the class paths above."""

_registered: dict[str, type[nn.Module]] = {}
ClassT = TypeVar("ClassT", bound=type)


class UntrustedModuleError(ValueError):
    """A module spec names something that is not an allowed ``nn.Module`` class."""


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
    return {"class_path": class_path(type(module)), "init_args": module.init_args}


def class_path(cls: type) -> str:
    """``module.QualifiedName`` of a class (what :func:`module_spec` records)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_module(cls: ClassT) -> ClassT:
    """Allow specs to rebuild ``cls``, an ``nn.Module`` subclass of your own (usable as a class decorator).

    Registering is the deliberate statement that checkpoints naming this class may construct it; do it before
    loading such a checkpoint (in the process that loads it). Returns ``cls``.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"only nn.Module subclasses can be registered, got {cls!r}")
    _registered[class_path(cls)] = cls
    return cls


def resolve_class(path: object) -> type[nn.Module]:
    """The class a spec's ``class_path`` names, if it is on the allow-list; nothing is imported otherwise."""
    if not isinstance(path, str):
        raise UntrustedModuleError(f"class_path must be a string, got {type(path).__name__}")
    full = PUBLIC_ALIASES.get(path, path)
    if full in _registered:
        return _registered[full]
    if full not in BUILTIN_MODULES:
        raise UntrustedModuleError(
            f"refusing to build {path!r}: a module spec may only name the project's modules "
            f"({', '.join(sorted(PUBLIC_ALIASES))}) or a class registered with ctxir.nn.config.register_module"
        )
    module_name, _, name = full.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def check_specs(value: object, where: str) -> None:
    """Refuse any ``{"class_path": ...}`` mapping inside ``value`` (searched recursively) that names a class off the
    allow-list; ``where`` (e.g. the checkpoint's path) starts the message."""
    if isinstance(value, Mapping):
        if "class_path" in value:
            try:
                resolve_class(value["class_path"])
            except UntrustedModuleError as error:
                raise UntrustedModuleError(f"{where}: {error}") from None
        for item in value.values():
            check_specs(item, where)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_specs(item, where)


def build_module(spec: ModuleOrSpec) -> nn.Module:
    """A module from a :func:`module_spec` dict (a module passes through unchanged).

    Only allowed classes are built (see the module doc); ``init_args`` must be a mapping of argument names.
    """
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise TypeError(f"expected an nn.Module or a {{'class_path', 'init_args'}} mapping, got {spec!r}")
    cls = resolve_class(spec["class_path"])
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, Mapping) or not all(isinstance(key, str) for key in init_args):
        raise UntrustedModuleError(f"init_args of {spec['class_path']!r} must map argument names to values")
    return cls(**dict(init_args))
