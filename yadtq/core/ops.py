"""Operations a task can name: a registry, the ``@operation`` decorator, and the built-ins.

Operations must live in importable modules: a worker is another process and finds an operation by
name, never by pickling a function. Arguments are checked twice with the same code - by the client
before anything is sent, and by the worker before running - against the function's signature, its
type annotations (JSON types only) and an optional ``limits`` check that keeps one task from eating
the machine. Anything an operation raises fails its task, never the worker.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import statistics
import time
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from yadtq.core.errors import BadArguments, ConfigError, UnknownOperation

Limits = Callable[..., None]

#: Largest list an aggregate operation accepts.
MAX_ITEMS = 100_000
#: Largest integer result (in bits) pow may produce: about 3,000 decimal digits, under Python's
#: 4,300-digit int-to-str limit so that every result can be written as JSON.
MAX_POW_BITS = 10_000
MAX_FACTORIAL = 1_000
MAX_FIBONACCI = 10_000
MAX_IS_PRIME = 10**24
MAX_SLEEP = 3_600.0


@dataclass(frozen=True)
class Operation:
    name: str
    func: Callable[..., Any]
    signature: inspect.Signature
    hints: dict[str, Any]
    limits: Limits | None = None
    #: The argument that says how long the operation runs, in seconds (``sleep``'s ``seconds``): the
    #: client refuses a call that could not finish within the task's time limit.
    duration: str | None = None

    @property
    def usage(self) -> str:
        """``add(a: number, b: number)``: the call as a user types it."""
        params = []
        for p in self.signature.parameters.values():
            star = "*" if p.kind is p.VAR_POSITIONAL else ""
            hint = self.hints.get(p.name)
            params.append(
                f"{star}{p.name}: {_describe(hint).removeprefix('a ').removeprefix('an ')}" if hint else p.name
            )
        return f"{self.name}({', '.join(params)})"

    @functools.cached_property
    def _plain(self) -> tuple[str, ...] | None:
        """The parameter names, if each is a plain one without a default (``add(a, b)``): a call
        with exactly that many positional arguments binds them in order. ``Signature.bind`` gives the
        same for such a call, at a tenth of a submit's CPU; anything else still goes through it."""
        params = list(self.signature.parameters.values())
        if all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params):
            return tuple(p.name for p in params)
        return None

    @property
    def doc(self) -> str:
        return (inspect.getdoc(self.func) or "").split("\n")[0]

    def check(self, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise :class:`BadArguments` unless ``op(*args, **kwargs)`` is an acceptable call."""
        names = self._plain
        if not kwargs and names is not None and len(args) == len(names):
            arguments, call_args, call_kwargs = dict(zip(names, args, strict=True)), tuple(args), kwargs
        else:
            try:
                bound = self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise BadArguments(f"{self.usage}: {exc}") from None
            arguments, call_args, call_kwargs = bound.arguments, bound.args, bound.kwargs
        for pname, value in arguments.items():
            param = self.signature.parameters[pname]
            hint = self.hints.get(pname)
            if hint is None:
                continue
            values = value if param.kind is param.VAR_POSITIONAL else [value]
            for v in values:
                if not _fits(v, hint):
                    raise BadArguments(
                        f"{self.name}: argument {pname!r} must be {_describe(hint)}, got {type(v).__name__} {v!r:.40}"
                    )
        if self.limits is not None:
            try:
                self.limits(*call_args, **call_kwargs)
            except BadArguments as exc:
                raise BadArguments(f"{self.name}: {exc}") from None

    def seconds(self, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
        """How long ``op(*args, **kwargs)`` runs, for an operation that declares a ``duration``
        argument; None otherwise. The call must have passed :meth:`check`."""
        if self.duration is None:
            return None
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return float(bound.arguments[self.duration])


class Registry:
    """Name -> :class:`Operation`; one per process, filled by imports."""

    def __init__(self) -> None:
        self._ops: dict[str, Operation] = {}

    def register(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        limits: Limits | None = None,
        duration: str | None = None,
    ) -> Operation:
        name = name or func.__name__
        if name in self._ops and self._ops[name].func is not func:
            raise ValueError(f"operation {name!r} is already registered")
        hints = typing.get_type_hints(func)
        hints.pop("return", None)
        signature = inspect.signature(func)
        if duration is not None and duration not in signature.parameters:
            raise ValueError(f"operation {name!r}: duration {duration!r} is not one of its arguments")
        op = Operation(name, func, signature, hints, limits, duration)
        self._ops[name] = op
        return op

    def get(self, name: str) -> Operation:
        try:
            return self._ops[name]
        except KeyError:
            known = ", ".join(sorted(self._ops))
            raise UnknownOperation(f"unknown operation {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __iter__(self) -> typing.Iterator[Operation]:
        return iter(sorted(self._ops.values(), key=lambda op: op.name))


registry = Registry()


def operation(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    limits: Limits | None = None,
    duration: str | None = None,
) -> Any:
    """Register a function as an operation: ``@operation`` or ``@operation(name=..., limits=...)``.
    ``duration`` names the argument that is the operation's run time in seconds, if it has one."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        registry.register(f, name=name, limits=limits, duration=duration)
        return f

    return wrap(func) if func is not None else wrap


def load_imports(modules: Iterable[str]) -> None:
    """Import the modules that register user operations (``Config.imports``)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import {module!r} (from YADTQ_IMPORTS): {exc}") from None


# --- type checks --------------------------------------------------------------------------------
def _fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return isinstance(value, int) or math.isfinite(value)
    if hint in (int, str, bool, dict):
        return isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if hint is float:
        return "a number"
    if hint is int:
        return "an integer"
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint) or (Any,)
        return f"a list of {_describe(item).removeprefix('a ').removeprefix('an ')}s"
    return getattr(hint, "__name__", str(hint))


# --- limits ---------------------------------------------------------------------------------------
def _at_most(name: str, value: float, top: float, low: float = 0) -> None:
    if not low <= value <= top:
        raise BadArguments(f"{name} must be between {low:g} and {top:g}, got {value!r:.40}")


def _list_limit(values: list[float]) -> None:
    if len(values) > MAX_ITEMS:
        raise BadArguments(f"at most {MAX_ITEMS} values, got {len(values)}")


def _non_empty(values: list[float]) -> None:
    _list_limit(values)
    if not values:
        raise BadArguments("needs at least one value")


def _pow_limits(base: float, exp: float) -> None:
    if isinstance(base, int) and isinstance(exp, int) and abs(base) > 1:
        if exp > 0 and exp * math.log2(abs(base)) > MAX_POW_BITS:
            raise BadArguments(f"pow result would exceed {MAX_POW_BITS} bits; use smaller numbers")
    if abs(exp) > 1_000_000:
        raise BadArguments("pow exponent must be at most 1,000,000 in size")


# --- built-ins ------------------------------------------------------------------------------------
@operation
def add(a: float, b: float) -> float:
    """a + b"""
    return a + b


@operation
def sub(a: float, b: float) -> float:
    """a - b"""
    return a - b


def _mul_limits(a: float, b: float) -> None:
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_POW_BITS:
        raise BadArguments(f"product would exceed {MAX_POW_BITS} bits")


@operation(limits=_mul_limits)
def mul(a: float, b: float) -> float:
    """a * b"""
    return a * b


@operation
def div(a: float, b: float) -> float:
    """a / b (true division); dividing by zero fails the task."""
    return a / b


@operation
def mod(a: float, b: float) -> float:
    """a % b; modulo zero fails the task."""
    return a % b


@operation(name="pow", limits=_pow_limits)
def power(base: float, exp: float) -> float:
    """base ** exp, refused when the result would be huge."""
    return base**exp


@operation
def neg(a: float) -> float:
    """-a"""
    return -a


@operation(name="abs")
def absolute(a: float) -> float:
    """|a|"""
    return abs(a)


@operation(name="sum", limits=_list_limit)
def total(values: list[float]) -> float:
    """Sum of a list of numbers."""
    return sum(values)


@operation(limits=_non_empty)
def mean(values: list[float]) -> float:
    """Arithmetic mean of a non-empty list."""
    return statistics.fmean(values)


@operation(name="min", limits=_non_empty)
def minimum(values: list[float]) -> float:
    """Smallest of a non-empty list."""
    return min(values)


@operation(name="max", limits=_non_empty)
def maximum(values: list[float]) -> float:
    """Largest of a non-empty list."""
    return max(values)


@operation
def gcd(a: int, b: int) -> int:
    """Greatest common divisor."""
    return math.gcd(a, b)


@operation(limits=lambda n: _at_most("n", n, MAX_FACTORIAL))
def factorial(n: int) -> int:
    """n! for 0 <= n <= 1000."""
    return math.factorial(n)


@operation(limits=lambda n: _at_most("n", n, MAX_FIBONACCI))
def fibonacci(n: int) -> int:
    """The n-th Fibonacci number (F0 = 0, F1 = 1), 0 <= n <= 10000."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@operation(limits=lambda n: _at_most("n", n, MAX_IS_PRIME, low=-MAX_IS_PRIME))
def is_prime(n: int) -> bool:
    """Primality, exact for |n| <= 10**24 (deterministic Miller-Rabin)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n in small:
        return True
    if any(n % p == 0 for p in small):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in small:  # these bases are exact for n < 3.3 * 10**24
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@operation(limits=lambda seconds: _at_most("seconds", seconds, MAX_SLEEP), duration="seconds")
def sleep(seconds: float) -> float:
    """Wait, then return the seconds waited: the unit of work of load experiments."""
    time.sleep(seconds)
    return seconds
