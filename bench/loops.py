"""Unrolled Python loops, so that loop overhead is a small share of what a
benchmark measures (10 statements per iteration)."""

from __future__ import annotations

from typing import Any, Callable

UNROLL = 10


def unrolled(statement: str, iterations: int, **names: Any) -> Callable[[], None]:
    """A function running `statement` UNROLL x `iterations` times, with
    `names` bound as locals (no global lookups in the loop)."""
    params = ", ".join(f"{name}={name}" for name in names)
    body = "\n".join(f"        {statement}" for _ in range(UNROLL))
    source = f"def run({params}):\n    for _ in range({iterations}):\n{body}\n"
    namespace: dict[str, Any] = dict(names)
    exec(compile(source, f"<unrolled {statement!r}>", "exec"), namespace)
    return namespace["run"]
