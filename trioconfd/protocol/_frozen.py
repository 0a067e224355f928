"""Frozen dataclasses made, on the hot path, at the cost of plain ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def quick_constructor(cls: type[T], *, checked_by_caller: bool = False) -> Callable[..., T]:
    """A constructor of the frozen, slotted dataclass ``cls`` that costs what a
    plain dataclass's does: the same arguments, in the same order, with the
    same defaults, and a ``cls`` made, frozen as any other.

    A frozen dataclass's ``__init__`` sets each field with
    ``object.__setattr__``: 1.7 µs for a :class:`QueryResult`'s 14 fields, on
    every query. This one makes a plain dataclass with the same slots, in the
    same order, and then makes the object a ``cls`` (its class assigned,
    which Python allows between classes of the same layout: it is checked
    here, once). Nothing of ``cls``'s own runs: a ``__post_init__`` (refused
    unless ``checked_by_caller`` says the callers do its checks), a
    ``__new__`` or a metaclass (refused), an ``__init__`` of its own (never
    give it one). (On a free-threaded Python, assigning a class pauses the
    other threads: there, this would cost more than it saves.)
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if not params.init or cls.__new__ is not object.__new__ or type(cls) is not type:
        raise TypeError(f"{cls.__name__} is not made by its dataclass __init__ alone")
    if hasattr(cls, "__post_init__") and not checked_by_caller:
        raise TypeError(f"{cls.__name__} has a __post_init__ that a quick constructor skips")
    specs: list[tuple[str, Any, Any]] = []
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        options: dict[str, Any] = {"init": spec.init, "kw_only": spec.kw_only}
        if spec.default is not dataclasses.MISSING:
            made = dataclasses.field(default=spec.default, **options)
        elif spec.default_factory is not dataclasses.MISSING:
            made = dataclasses.field(default_factory=spec.default_factory, **options)
        else:
            made = dataclasses.field(**options)
        specs.append((spec.name, spec.type, made))
    plain = dataclasses.make_dataclass(
        f"_Plain{cls.__name__}", specs, slots=True, eq=False, repr=False, match_args=False
    )
    # The layouts must match for the class to be assigned: found out now.
    probe: Any = object.__new__(plain)
    probe.__class__ = cls

    def construct(*args: Any, **kwargs: Any) -> T:
        made = plain(*args, **kwargs)
        made.__class__ = cls
        return made  # type: ignore[no-any-return]

    construct.__doc__ = f"A {cls.__name__}, made as a plain dataclass is (see quick_constructor)."
    return construct
