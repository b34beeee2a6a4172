"""A backtracking model of Python's ``re`` engine that counts its steps.

CPython's engine tells nothing about the work a match takes, and timing it is flaky on a
shared machine. This model runs the parse tree ``re`` itself builds (``re._parser``) with
plain backtracking and no optimisation, so its step count is an upper bound of what the
real engine does; :func:`sub_spans` checks that the model finds the same matches as
``re``, so the count is the count of the same search. It covers the constructs of the log
scrubbers (literals, classes, repeats greedy, lazy and possessive, atomic groups,
alternation, look-ahead and fixed-width look-behind, ``\\b``), and fails loudly on others.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from re import _constants as c  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

__all__ = ["StepCounter"]

Continuation = Callable[[int], bool]

_CATEGORIES: dict[Any, Callable[[str], bool]] = {
    c.CATEGORY_SPACE: str.isspace,
    c.CATEGORY_NOT_SPACE: lambda ch: not ch.isspace(),
    c.CATEGORY_WORD: lambda ch: ch.isalnum() or ch == "_",
    c.CATEGORY_NOT_WORD: lambda ch: not (ch.isalnum() or ch == "_"),
    c.CATEGORY_DIGIT: str.isdigit,
    c.CATEGORY_NOT_DIGIT: lambda ch: not ch.isdigit(),
}


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class StepCounter:
    """Runs one compiled pattern over texts the way ``re.sub`` scans them, counting steps."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.tree = list(_parser.parse(pattern.pattern, pattern.flags))
        self.ignore_case = bool(pattern.flags & re.IGNORECASE)
        self.steps = 0
        self._text = ""

    def sub_spans(self, text: str) -> list[tuple[int, int]]:
        """The spans ``re.sub`` would replace, found left to right without overlap."""
        self._text = text
        spans: list[tuple[int, int]] = []
        pos = 0
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20 * len(text) + 1000))
        try:
            while pos <= len(text):
                end = self._first_end(lambda p, k: self._seq(self.tree, 0, p, k), pos)
                if end is not None:
                    spans.append((pos, end))
                    pos = end if end > pos else pos + 1
                else:
                    pos += 1
        finally:
            sys.setrecursionlimit(limit)
        return spans

    # -- one character -------------------------------------------------------

    def _one(self, op: Any, av: Any, ch: str) -> bool:
        forms = {ch, ch.lower(), ch.upper()} if self.ignore_case else {ch}
        if op is c.LITERAL:
            return chr(av) in forms
        if op is c.NOT_LITERAL:
            return chr(av) not in forms
        if op is c.ANY:
            return ch != "\n"
        if op is c.IN:
            negate = bool(av) and av[0][0] is c.NEGATE
            items = av[1:] if negate else av
            hit = any(
                self._member(item_op, item_av, form) for form in forms for item_op, item_av in items
            )
            return hit != negate
        raise NotImplementedError(op)

    def _member(self, op: Any, av: Any, ch: str) -> bool:
        if op is c.LITERAL:
            return ch == chr(av)
        if op is c.RANGE:
            return av[0] <= ord(ch) <= av[1]
        if op is c.CATEGORY:
            return _CATEGORIES[av](ch)
        raise NotImplementedError(op)

    # -- sequences -----------------------------------------------------------

    def _seq(self, items: Sequence[Any], i: int, pos: int, k: Continuation) -> bool:
        self.steps += 1
        if i == len(items):
            return k(pos)
        op, av = items[i]
        text = self._text

        def rest(p: int) -> bool:
            return self._seq(items, i + 1, p, k)

        if op in (c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN):
            return pos < len(text) and self._one(op, av, text[pos]) and rest(pos + 1)
        if op is c.SUBPATTERN:
            return self._seq(list(av[3]), 0, pos, rest)
        if op is c.BRANCH:
            return any(self._seq(list(alt), 0, pos, rest) for alt in av[1])
        if op is c.MAX_REPEAT:
            return self._greedy(av[0], av[1], list(av[2]), 0, pos, rest)
        if op is c.MIN_REPEAT:
            return self._lazy(av[0], av[1], list(av[2]), 0, pos, rest)
        if op is c.POSSESSIVE_REPEAT:
            end = self._first_end(
                lambda p, k2: self._greedy(av[0], av[1], list(av[2]), 0, p, k2), pos
            )
            return end is not None and rest(end)
        if op is c.ATOMIC_GROUP:
            end = self._first_end(lambda p, k2: self._seq(list(av), 0, p, k2), pos)
            return end is not None and rest(end)
        if op in (c.ASSERT, c.ASSERT_NOT):
            return self._assert(op is c.ASSERT, av[0], list(av[1]), pos) and rest(pos)
        if op is c.AT:
            return self._at(av, pos) and rest(pos)
        raise NotImplementedError(op)

    def _first_end(self, run: Callable[[int, Continuation], bool], pos: int) -> int | None:
        end: list[int] = []
        return end[0] if run(pos, lambda p: end.append(p) is None) else None

    def _greedy(
        self, lo: int, hi: int, sub: list[Any], count: int, pos: int, k: Continuation
    ) -> bool:
        self.steps += 1
        if count < hi and self._seq(
            sub, 0, pos, lambda p: p != pos and self._greedy(lo, hi, sub, count + 1, p, k)
        ):
            return True
        return count >= lo and k(pos)

    def _lazy(
        self, lo: int, hi: int, sub: list[Any], count: int, pos: int, k: Continuation
    ) -> bool:
        self.steps += 1
        if count >= lo and k(pos):
            return True
        return count < hi and self._seq(
            sub, 0, pos, lambda p: p != pos and self._lazy(lo, hi, sub, count + 1, p, k)
        )

    def _assert(self, positive: bool, direction: int, sub: list[Any], pos: int) -> bool:
        if direction == 1:
            found = self._seq(sub, 0, pos, lambda p: True)
        else:
            lo, hi = _parser.SubPattern(_parser.State(), sub).getwidth()
            if lo != hi:
                raise NotImplementedError("variable-width look-behind")
            start = pos - lo
            found = start >= 0 and self._seq(sub, 0, start, lambda p: p == pos)
        return found == positive

    def _at(self, where: Any, pos: int) -> bool:
        text = self._text
        if where is c.AT_BOUNDARY:
            before = pos > 0 and _is_word(text[pos - 1])
            after = pos < len(text) and _is_word(text[pos])
            return before != after
        if where is c.AT_BEGINNING_STRING:
            return pos == 0
        if where is c.AT_END_STRING:
            return pos == len(text)
        raise NotImplementedError(where)
