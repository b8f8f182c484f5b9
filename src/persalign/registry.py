"""Name -> object registries, filled by a decorator, with "did you mean" on a typo.

    METHODS: Registry[type] = Registry("reward method")
    @METHODS.register("global-rm", summary="Bradley-Terry, scalar head on the last token")
    class GlobalRM: ...
    METHODS.get("global-rn")
    # Traceback (most recent call last):
    # ConfigError: unknown reward method 'global-rn'; did you mean 'global-rm'? (known: global-rm)

``persalign ls`` lists every registry, so a new method, decoder or metric is one new file.
"""

from __future__ import annotations

import importlib
import keyword
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from persalign.errors import ConfigError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    summary: str


class Registry(Generic[T]):
    """A named collection of implementations of one interface."""

    def __init__(self, kind: str, packages: tuple[str, ...] = ()):
        """``packages``: every module of these packages (found with pkgutil, so a new file is
        all a new entry needs) is imported on the first lookup; modules named ``_*`` are not."""
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._packages = packages
        self._loaded = not packages

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for package in self._packages:
                for module in discover(package):
                    importlib.import_module(module)

    def register(self, name: str, summary: str = "") -> Callable[[T], T]:
        """Decorator registering ``obj`` as ``name`` (summary: its docstring's first line)."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._entries[name] = Entry(name, obj, summary or (doc[0] if doc else ""))
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The object registered as ``name``; a ConfigError with suggestions otherwise."""
        self._load()
        if name not in self._entries:
            hint = did_you_mean(name, list(self._entries))
            known = ", ".join(sorted(self._entries)) or "none registered"
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {known})")
        return self._entries[name].obj

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        for name in self.names():
            yield self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __len__(self) -> int:
        self._load()
        return len(self._entries)


def discover(package: str) -> list[str]:
    """The importable modules directly inside ``package`` (sorted; ``_private`` ones left out)."""
    path = importlib.import_module(package).__path__
    return sorted(
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(path)
        if not info.name.startswith("_")
    )


def plugin_name_problem(module: str) -> str | None:
    """Why ``module`` is not a plugin name (a dotted module name such as ``my_lab.metrics``, not
    a path or a relative name), or None."""
    parts = module.split(".") if isinstance(module, str) else [""]
    if not all(part.isidentifier() and not keyword.iskeyword(part) for part in parts):
        return f"plugin {module!r} is not a module name: use a dotted name such as my_lab.metrics"
    return None


def load_plugins(modules: Sequence[str]) -> None:
    """Import each module (a plugin registers its methods, decoders or metrics on import).

    A name that is not a dotted module name, or any failure to import one (not found, a syntax
    error, an exception raised by its code), is a ConfigError naming the plugin and the reason.
    """
    for module in modules:
        problem = plugin_name_problem(module)
        if problem:
            raise ConfigError(problem)
        try:
            importlib.import_module(module)
        except Exception as exc:  # whatever the plugin's code raises
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
            raise ConfigError(f"plugin {module!r} cannot be imported: {reason}") from None
