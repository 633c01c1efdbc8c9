"""One generic registry for every extension axis, and the plugin loader.

Each axis (attention kinds, architectures, datasets, tasks, profiles, ...) is a
:class:`Registry`. An extension registers itself where it is defined::

    ATTENTIONS = Registry[Callable[..., nn.Module]]("attention")

    @ATTENTIONS.register("se")
    class SqueezeExcite(nn.Module): ...

    ATTENTIONS.register("eca", "cabench.models.eca:ECA")  # lazy: imported on first get()

Plugins add entries without a fork, from three places, each loaded once:

* ``--plugin MODULE`` on the command line (:func:`load_plugins`),
* the environment variable ``CABENCH_PLUGINS`` (comma-separated module names),
* the entry-point group ``cabench.plugins`` of installed packages.

Importing such a module is all it takes: its decorators register what it defines.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLUGINS_ENV",
    "LazyCall",
    "Registry",
    "RegistryError",
    "import_object",
    "load_plugins",
    "loaded_plugins",
    "plugin_modules",
]

T = TypeVar("T")

ENTRY_POINT_GROUP = "cabench.plugins"
PLUGINS_ENV = "CABENCH_PLUGINS"


class RegistryError(ValueError):
    """A name that is unknown, taken twice, or an import path that does not resolve."""


_imported_by_path: dict[str, None] = {}


def import_object(path: str) -> Any:
    """Import ``"package.module:attr"`` (``attr`` may be dotted) and return the object."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"{path!r} is not an import path of the form 'package.module:Name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise RegistryError(f"cannot import {module_name!r} (from {path!r}): {e}") from None
    except BaseException as e:  # a plugin module that fails while importing, sys.exit() and Ctrl-C included
        raise RegistryError(f"importing {module_name!r} (from {path!r}) failed: {_failure(e)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})") from None
    _imported_by_path[module_name] = None
    return obj


class LazyCall:
    """A function named by its ``"package.module:name"`` path, imported on the first call, with keyword arguments
    bound in advance: how a light declaration (a dataset's, say) names its implementation without importing it.
    Holds only the path and the bound values, so it pickles for worker processes as it is."""

    def __init__(self, path: str, **bound: Any) -> None:
        if not is_import_path(path):
            raise RegistryError(f"{path!r} is not an import path of the form 'package.module:name'")
        self.path, self.bound = path, bound
        self._target: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._target is None:
            self._target = import_object(self.path)
        return self._target(*args, **self.bound, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "bound": self.bound, "_target": None}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LazyCall) and (self.path, self.bound) == (other.path, other.bound)

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        bound = "".join(f", {k}={v!r}" for k, v in self.bound.items())
        return f"LazyCall({self.path!r}{bound})"


def imported_by_path() -> list[str]:
    """The modules this process imported for a ``"package.module:Name"`` (a user's block, say), in order."""
    return list(_imported_by_path)


def _failure(e: BaseException) -> str:
    """``ValueError: bad`` / ``SystemExit(0)``: what a plugin's code raised, on one line."""
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r})"
    text = " ".join(str(e).split())[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def is_import_path(name: str) -> bool:
    """Whether ``name`` looks like ``package.module:Name`` rather than a registered name."""
    return ":" in name


class Registry(Generic[T]):
    """Names to objects, for one kind of extension.

    ``register(name)`` decorates; ``register(name, "pkg.mod:obj")`` registers
    lazily; ``register(name, obj)`` registers a value. A name registered twice is
    an error. ``get`` names what is available and the closest match.
    """

    def __init__(
        self, kind: str, *, builtin_modules: Iterable[str] = (), builtin_names: Iterable[str] | None = None
    ) -> None:
        """``builtin_modules``: modules (or ``"pkg.*"``, every module of a package) whose import registers
        the built-in entries; imported on first lookup. ``builtin_names``: the names they register, so that a
        plugin cannot take one before they are imported; None (light built-in modules, such as declarations that
        name their implementation by import path): they are imported before any plugin registers instead."""
        self.kind = kind
        self._builtin_names = None if builtin_names is None else frozenset(builtin_names)
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._where: dict[str, str] = {}
        self._by: dict[str, str] = {}  # name -> the module whose code registered it
        # Modules whose import registers the built-in entries (imported on first lookup).
        self._builtin_modules = tuple(builtin_modules)
        self._builtins_loaded = not self._builtin_modules
        _REGISTRIES.append(self)

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, obj: T | str) -> T | str: ...

    def register(self, name: str, obj: Any = None) -> Any:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"a {self.kind} name must be a non-empty string, not {name!r}")
        if obj is None:

            def decorate(target: T) -> T:
                self._add(name, target)
                return target

            return decorate
        if isinstance(obj, str) and is_import_path(obj):
            self._check_free(name, obj)
            self._lazy[name] = obj
            self._where[name] = obj
            self._by[name] = _registering_module()
            return obj
        self._add(name, obj)
        return obj

    def _check_free(self, name: str, where: str) -> None:
        by = _registering_module()
        if not self._builtins_loaded and not by.startswith("cabench."):
            if self._builtin_names is None:
                self._load_builtins()  # then a built-in name taken again is "registered twice", below
            elif name in self._builtin_names:
                raise RegistryError(f"{self.kind} {name!r} is built in; {where} cannot register it again")
        if name in self._entries or name in self._lazy:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: by {self._where.get(name, '?')} and by {where}"
            )

    def _add(self, name: str, obj: T) -> None:
        where = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"
        self._check_free(name, where)
        self._entries[name] = obj
        self._where[name] = where
        self._by[name] = _registering_module()

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module in self._builtin_modules:
                for name in _expand(module):
                    importlib.import_module(name)
        _load_default_plugins()

    def registered(self, name: str) -> T | None:
        """The entry under ``name`` if already registered (eagerly), without loading anything."""
        return self._entries.get(name)

    def modules(self) -> set[str]:
        """The modules that registered this registry's entries (for passing plugins on to workers)."""
        return set(self._by.values())

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self.get(name)) for name in self.names()]

    def where(self, name: str) -> str:
        """Where ``name`` was defined (``module:qualname``), for messages and provenance."""
        self.get(name)
        return self._where[name]

    def get(self, name: str) -> T:
        self._load_builtins()
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            obj = import_object(self._lazy.pop(name))
            self._entries[name] = obj
            return obj
        raise RegistryError(self.unknown(name))

    def unknown(self, name: object) -> str:
        """The one-line message for an unknown ``name``: what exists, and the closest match."""
        available = self.names()
        text = str(name)
        if len(text) > 60:
            text = text[:57] + "..."
        message = f"unknown {self.kind} {text!r}"
        hint = did_you_mean(str(name), available)
        plugin = "" if hint else " (a plugin's name: load it with --plugin MODULE or CABENCH_PLUGINS)"
        return message + hint + f"; available: {', '.join(available) or 'none'}" + plugin


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``name``, ignoring case (``CA`` -> ``ca``), else ``""``.
    The one suggestion every unknown name gets: registered names, suites, rows, dataset keys."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name[:200].lower(), list(by_lower), n=1)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def _registering_module() -> str:
    """The module whose code called ``register`` (past this module and any ``register*`` helper)."""
    frame = sys._getframe(2)
    while frame is not None and (
        frame.f_globals.get("__name__") == __name__ or frame.f_code.co_name.startswith(("register", "decorate"))
    ):
        frame = frame.f_back  # type: ignore[assignment]
    return frame.f_globals.get("__name__", "?") if frame is not None else "?"


def _expand(module: str) -> list[str]:
    """``"pkg.*"``: every public module of the package ``pkg`` (no hand-kept list); else ``[module]``."""
    if not module.endswith(".*"):
        return [module]
    package = importlib.import_module(module[:-2])
    found = pkgutil.iter_modules(package.__path__, package.__name__ + ".")
    return sorted(name for _, name, _ in found if not name.rpartition(".")[2].startswith("_"))


_plugins: list[str] = []
_defaults_loaded = False
_REGISTRIES: list[Registry[Any]] = []


def loaded_plugins() -> list[str]:
    """Modules loaded as plugins, in order; passed on to worker processes."""
    return list(_plugins)


def plugin_modules() -> list[str]:
    """What another process must import to know this one's extensions: the plugins loaded here, those named in
    ``CABENCH_PLUGINS``, and every importable module outside cabench that registered something."""
    found = dict.fromkeys([*os.environ.get(PLUGINS_ENV, "").split(","), *_plugins])
    for registry in _REGISTRIES:
        for module in sorted(registry.modules()):
            if module and module != "__main__" and module != "?" and not module.startswith("cabench."):
                found[module] = None
    return [m.strip() for m in found if m.strip()]


def load_plugins(modules: Iterable[str]) -> list[str]:
    """Import each plugin module once (its imports register what it defines)."""
    for module in modules:
        module = module.strip()
        if not module or module in _plugins:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise RegistryError(f"cannot import plugin {module!r}: {e}") from None
        except RegistryError:
            raise
        except BaseException as e:  # untrusted code run on purpose: SystemExit and KeyboardInterrupt too
            raise RegistryError(f"plugin {module!r} failed while importing: {_failure(e)}") from None
        _plugins.append(module)
    return loaded_plugins()


def _load_default_plugins() -> None:
    """``CABENCH_PLUGINS`` and the ``cabench.plugins`` entry points, once per process."""
    global _defaults_loaded
    if _defaults_loaded:
        return
    _defaults_loaded = True
    from importlib.metadata import entry_points

    load_plugins(os.environ.get(PLUGINS_ENV, "").split(","))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value in _plugins:
            continue
        try:
            ep.load()
        except BaseException as e:
            raise RegistryError(f"plugin entry point {ep.name!r} ({ep.value}) failed: {_failure(e)}") from None
        _plugins.append(ep.value.partition(":")[0])
