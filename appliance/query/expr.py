"""Column expressions over record tables, evaluated with Arrow compute functions.

The filter language compiles to a tree of these expressions. Evaluating one works on
the table's columns in place (memory-mapped record files are not copied) and needs
only pyarrow, so that the ra tools start without loading a dataframe library.
Comparisons follow SQL: a comparison with a null is null, ``&`` and ``|`` use
Kleene logic, and ``Filter.mask`` counts a null result as not selected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

Datum = pa.Array | pa.ChunkedArray | pa.Scalar
Evaluate = Callable[[pa.Table], Datum]


class Expr:
    """A value computed from the columns of a table; operators build larger expressions."""

    __hash__ = None  # type: ignore[assignment]  # == builds an expression, as in dataframes

    def __init__(self, evaluate: Evaluate, columns: frozenset[str]) -> None:
        self._evaluate = evaluate
        #: The table columns this expression reads.
        self.columns = columns

    def evaluate(self, table: pa.Table) -> Datum:
        """Compute the expression on ``table``."""
        return self._evaluate(table)

    # Building -----------------------------------------------------------------------

    def _apply(self, function: Callable[..., Datum], other: Any = None,
               unary: bool = False) -> Expr:
        if unary:
            return Expr(lambda table: function(self.evaluate(table)), self.columns)
        if isinstance(other, Expr):
            return Expr(lambda table: function(self.evaluate(table), other.evaluate(table)),
                        self.columns | other.columns)

        def with_value(table: pa.Table) -> Datum:
            values = self.evaluate(table)
            return function(values, _scalar(other, values.type))

        return Expr(with_value, self.columns)

    def __and__(self, other: Expr) -> Expr:
        return self._apply(pc.and_kleene, other)

    def __or__(self, other: Expr) -> Expr:
        return self._apply(pc.or_kleene, other)

    def __invert__(self) -> Expr:
        return self._apply(pc.invert, unary=True)

    def __eq__(self, other: Any) -> Expr:  # type: ignore[override]
        return self._apply(pc.equal, other)

    def __ne__(self, other: Any) -> Expr:  # type: ignore[override]
        return self._apply(pc.not_equal, other)

    def __lt__(self, other: Any) -> Expr:
        return self._apply(pc.less, other)

    def __le__(self, other: Any) -> Expr:
        return self._apply(pc.less_equal, other)

    def __gt__(self, other: Any) -> Expr:
        return self._apply(pc.greater, other)

    def __ge__(self, other: Any) -> Expr:
        return self._apply(pc.greater_equal, other)

    def __add__(self, other: Any) -> Expr:
        return self._apply(pc.add, other)

    def __truediv__(self, other: Any) -> Expr:
        return self._apply(pc.divide, other)

    def __rshift__(self, bits: int) -> Expr:
        return self._apply(pc.shift_right, bits)

    def is_in(self, values: Iterable[Any]) -> Expr:
        """Test whether the value is one of ``values``."""
        choices = list(values)

        def evaluate(table: pa.Table) -> Datum:
            column = self.evaluate(table)
            if 0 < len(choices) <= FEW_CHOICES and getattr(column, "null_count", 1) == 0:
                # Without nulls, comparisons give what is_in gives, in half its time.
                result = pc.equal(column, _scalar(choices[0], column.type))
                for choice in choices[1:]:
                    result = pc.or_(result, pc.equal(column, _scalar(choice, column.type)))
                return result
            return pc.is_in(column, value_set=pa.array(choices, type=column.type))

        return Expr(evaluate, self.columns)

    def fill_null(self, value: Any) -> Expr:
        """Return the value, with ``value`` in place of nulls."""
        return self._apply(pc.fill_null, value)

    def cast(self, to: pa.DataType) -> Expr:
        """Return the value converted to type ``to``."""
        return Expr(lambda table: pc.cast(self.evaluate(table), to), self.columns)

    def char_at(self, position: int) -> Expr:
        """Return the character at ``position`` of a string ("" past its end)."""
        return Expr(lambda table: pc.utf8_slice_codeunits(self.evaluate(table), position,
                                                          position + 1), self.columns)

    def contains(self, text: str) -> Expr:
        """Test whether a string contains ``text`` literally."""
        return Expr(lambda table: pc.match_substring(self.evaluate(table), text), self.columns)


#: ``is_in`` over at most this many values compares with each (when there are no nulls).
FEW_CHOICES = 3


def col(name: str) -> Expr:
    """Return an expression for the column ``name`` of the table."""
    return Expr(lambda table: table.column(name), frozenset([name]))


def seconds_between(first: str, last: str) -> Expr:
    """Return the seconds from timestamp column ``first`` to column ``last``, as floats."""

    def evaluate(table: pa.Table) -> Datum:
        span = pc.subtract(table.column(last), table.column(first))
        unit = span.type.unit
        return pc.divide(pc.cast(span, pa.int64()), float(UNITS_PER_SECOND[unit]))

    return Expr(evaluate, frozenset([first, last]))


UNITS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _scalar(value: Any, like: pa.DataType) -> Any:
    """Make a Python value comparable with values of type ``like``.

    Bytes become a scalar of the column's fixed-size binary type; other values are
    passed on for Arrow to convert.
    """
    if isinstance(value, bytes) and pa.types.is_fixed_size_binary(like):
        return pa.scalar(value, type=like)
    return value
