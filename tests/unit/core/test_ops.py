"""The operation registry and argument validation (no services needed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from yadtq.client.client import Client
from yadtq.core.config import Config
from yadtq.core.errors import BadArguments, UnknownOperation
from yadtq.core.ops import Registry, registry

BUILTINS = {
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "pow",
    "neg",
    "abs",
    "sum",
    "mean",
    "min",
    "max",
    "gcd",
    "factorial",
    "fibonacci",
    "is_prime",
    "sleep",
}


def run(name: str, *args: object) -> object:
    op = registry.get(name)
    op.check(list(args), {})
    return op.func(*args)


def test_every_builtin_is_registered_with_a_doc() -> None:
    names = {op.name for op in registry}
    assert names >= BUILTINS
    assert all(registry.get(n).doc for n in BUILTINS)


def test_unknown_operation_lists_the_known_ones() -> None:
    with pytest.raises(UnknownOperation, match="unknown operation 'frob'; known: abs, add"):
        registry.get("frob")


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("add", (2, 3), 5),
        ("sub", (1, 4), -3),
        ("mul", (2, 2.5), 5.0),
        ("div", (1, 4), 0.25),
        ("mod", (-7, 3), 2),
        ("pow", (3, 4), 81),
        ("pow", (2, -1), 0.5),
        ("neg", (5,), -5),
        ("abs", (-2,), 2),
        ("sum", ([1, 2, 3],), 6),
        ("mean", ([1, 2],), 1.5),
        ("min", ([4, 2],), 2),
        ("max", ([4, 2],), 4),
        ("gcd", (12, 18), 6),
        ("factorial", (5,), 120),
        ("fibonacci", (0,), 0),
        ("fibonacci", (10,), 55),
        ("is_prime", (97,), True),
        ("is_prime", (1,), False),
        ("is_prime", (561,), False),
        ("is_prime", (10**18 + 9,), True),
    ],
)
def test_builtins_compute(name: str, args: tuple[object, ...], expected: object) -> None:
    assert run(name, *args) == expected


def test_is_prime_agrees_with_trial_division() -> None:
    def slow(n: int) -> bool:
        return n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))

    assert [n for n in range(2000) if run("is_prime", n)] == [n for n in range(2000) if slow(n)]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("add", (1,), "missing a required argument: 'b'"),
        ("add", (1, 2, 3), "too many positional arguments"),
        ("add", (1, "2"), "argument 'b' must be a number, got str"),
        ("add", (True, 2), "argument 'a' must be a number, got bool"),
        ("gcd", (1.5, 2), "argument 'a' must be an integer"),
        ("sum", ([1, "x"],), "must be a list of numbers"),
        ("mean", ([],), "needs at least one value"),
        ("factorial", (-1,), "between 0 and 1000"),
        ("factorial", (1001,), "between 0 and 1000"),
        ("fibonacci", (10**5,), "between 0 and 10000"),
        ("pow", (10, 10_000), "exceed 10000 bits"),
        ("pow", (1.5, 10**7), "at most 1,000,000"),
        ("mul", (10**2000, 10**2000), "exceed 10000 bits"),
        ("sleep", (-1,), "between 0 and 3600"),
        ("sum", ([1] * 100_001,), "at most 100000 values"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(name: str, args: tuple[object, ...], message: str) -> None:
    with pytest.raises(BadArguments, match=message.replace("(", r"\(")):
        registry.get(name).check(list(args), {})


def test_operation_errors_come_from_running_not_from_checking() -> None:
    registry.get("div").check([1, 0], {})  # a valid call that fails when run
    with pytest.raises(ZeroDivisionError):
        registry.get("div").func(1, 0)


def test_a_user_registry_validates_from_annotations_and_limits() -> None:
    reg = Registry()

    def limits(text: str, times: int) -> None:
        if times > 3:
            raise BadArguments("times must be at most 3")

    def repeat(text: str, times: int = 2) -> str:
        return text * times

    op = reg.register(repeat, limits=limits)
    assert op.usage == "repeat(text: str, times: integer)"
    op.check(["ab"], {"times": 3})
    with pytest.raises(BadArguments, match="at most 3"):
        op.check(["ab"], {"times": 4})
    with pytest.raises(BadArguments, match="'text' must be str"):
        op.check([1], {})
    with pytest.raises(ValueError, match="already registered"):
        reg.register(lambda text: text, name="repeat")


def test_an_operation_may_declare_which_argument_is_its_run_time() -> None:
    assert registry.get("sleep").seconds([5], {}) == 5.0
    assert registry.get("sleep").seconds([], {"seconds": 2.5}) == 2.5
    assert registry.get("add").seconds([1, 2], {}) is None

    def wait(label: str, pause: float = 1.0) -> str:
        return label

    assert Registry().register(wait, duration="pause").seconds(["x"], {}) == 1.0
    with pytest.raises(ValueError, match="duration 'delay' is not one of its arguments"):
        Registry().register(wait, duration="delay")


@pytest.mark.parametrize(
    ("args", "options", "config_limit"),
    [([400], {}, 300.0), ([10], {"time_limit": 5}, 300.0), ([10], {}, 10.0)],
)
def test_a_sleep_longer_than_its_time_limit_is_refused_at_submit(
    args: list[float], options: dict[str, float], config_limit: float, tmp_path: Path
) -> None:
    client = Client(Config.from_env(env={"YADTQ_HOME": str(tmp_path)}, time_limit=config_limit))
    limit = options.get("time_limit", config_limit)
    with pytest.raises(BadArguments, match=f"sleep: seconds={args[0]} does not fit the time limit of {limit:g}s"):
        client.build("sleep", args, **options)
    assert client.build("sleep", [args[0]], time_limit=args[0] + 1).time_limit == args[0] + 1
    assert client.build("sleep", [min(args[0], limit) - 1], **options).op == "sleep"
