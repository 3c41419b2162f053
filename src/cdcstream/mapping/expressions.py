"""A safe evaluator for the SQLite-like expression subset DMS accepts in ``add-column`` rules.

Supported: ``$COLUMN`` references (and a few ``$AR_M_*`` / ``$AR_H_*`` header values), string literals
(``'it''s'``), integer and real numbers, ``NULL``, unary ``-``/``+``/``NOT``, ``||``, ``* / %``, ``+ -``,
comparisons (``< <= > >= = == != <> IS [NOT]``), ``AND``/``OR``, ``CASE [x] WHEN … THEN … [ELSE …] END`` and the
functions in :data:`~cdcstream.mapping.expreval.FUNCTIONS`. Precedence and NULL handling follow SQLite (``||``
binds tightest; any operator with a NULL operand yields NULL except ``IS``, ``AND``/``OR`` three-valued logic,
``coalesce``/``ifnull``).

The text is parsed once into closures (no ``eval``, no attribute access, no loops), so a hostile mapping file can
do nothing but compute a value; evaluation per row is a handful of Python calls. Here the text is tokenised and
parsed; what each piece computes (values, functions, operators) is :mod:`cdcstream.mapping.expreval`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cdcstream.mapping.expreval import (
    FUNCTIONS,
    HEADERS,
    Env,
    Fn,
    compare,
    op_and,
    op_arith,
    op_cmp,
    op_concat,
    op_is,
    op_or,
    to_number,
    truth,
)


class ExpressionError(ValueError):
    """A syntax or reference error, with the 0-based character position it was found at."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"at position {position}: {message}")
        self.position = position


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)
    | (?P<str>'(?:[^']|'')*')
    | (?P<col>\$[A-Za-z_][A-Za-z0-9_]*)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>\|\||<=|>=|==|!=|<>|[-+*/%(),<>=])
    )""",
    re.VERBOSE,
)

KEYWORDS = frozenset({"AND", "OR", "NOT", "NULL", "IS", "CASE", "WHEN", "THEN", "ELSE", "END"})

# Header and metadata values DMS exposes to expressions (the subset that has a meaning for a CDC stream).


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num, str, col, name, op, end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            out.append(_Tok("end", "", pos))
            return out
        m = _TOKEN.match(text, pos)
        if m is None or m.lastgroup is None:
            if text[pos] == "'":
                raise ExpressionError("unterminated string literal", pos)
            raise ExpressionError(f"unexpected character {text[pos]!r}", pos)
        start = m.start(m.lastgroup)
        out.append(_Tok(m.lastgroup, m.group(m.lastgroup), start))
        pos = m.end()


# --- parser -------------------------------------------------------------------------------------------------


#: Parentheses, calls, CASE, signs and NOT inside one another: the parser recurses ~10 frames per level.
MAX_NESTING = 40
#: Operators, calls and CASEs in one expression: each is a closure calling its operands, so this bounds the
#: recursion depth of an evaluation (a chain of 5,000 ``||`` would exhaust the stack at the first row).
MAX_OPERATIONS = 200


class _Parser:
    def __init__(self, text: str, resolve: Callable[[str, int], str]) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.resolve = resolve
        self.columns: list[str] = []
        self.nesting = 0
        self.operations = 0

    def _operation(self, pos: int) -> None:
        self.operations += 1
        if self.operations > MAX_OPERATIONS:
            raise ExpressionError(f"more than {MAX_OPERATIONS} operators and calls in one expression", pos)

    def _nest(self, pos: int) -> None:
        """Enter one level (the caller leaves it with ``self.nesting -= 1``)."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise ExpressionError(f"nested more than {MAX_NESTING} levels deep", pos)

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _kw(self, word: str) -> bool:
        t = self.tok
        return t.kind == "name" and t.text.upper() == word

    def _take_kw(self, word: str) -> None:
        if not self._kw(word):
            raise ExpressionError(f"expected {word}, found {self.tok.text or 'end of expression'!r}", self.tok.pos)
        self.i += 1

    def _take_op(self, op: str) -> None:
        if not (self.tok.kind == "op" and self.tok.text == op):
            raise ExpressionError(f"expected {op!r}, found {self.tok.text or 'end of expression'!r}", self.tok.pos)
        self.i += 1

    def parse(self) -> Fn:
        fn = self.or_()
        if self.tok.kind != "end":
            raise ExpressionError(f"unexpected {self.tok.text!r}", self.tok.pos)
        return fn

    def or_(self) -> Fn:
        left = self.and_()
        while self._kw("OR"):
            self._operation(self.tok.pos)
            self.i += 1
            right = self.and_()
            left = op_or(left, right)
        return left

    def and_(self) -> Fn:
        left = self.not_()
        while self._kw("AND"):
            self._operation(self.tok.pos)
            self.i += 1
            right = self.not_()
            left = op_and(left, right)
        return left

    def not_(self) -> Fn:
        if self._kw("NOT"):
            self._operation(self.tok.pos)
            self._nest(self.tok.pos)
            self.i += 1
            inner = self.not_()
            self.nesting -= 1

            def not_fn(env: Env) -> Any:
                t = truth(inner(env))
                return None if t is None else int(not t)

            return not_fn
        return self.equality()

    def equality(self) -> Fn:
        left = self.relational()
        while True:
            t = self.tok
            if t.kind == "op" and t.text in ("=", "==", "!=", "<>"):
                self._operation(t.pos)
                self.i += 1
                right = self.relational()
                left = op_cmp(left, right, (lambda c: c == 0) if t.text in ("=", "==") else (lambda c: c != 0))
            elif self._kw("IS"):
                self._operation(t.pos)
                self.i += 1
                negate = False
                if self._kw("NOT"):
                    self.i += 1
                    negate = True
                right = self.relational()
                left = op_is(left, right, negate)
            else:
                return left

    def relational(self) -> Fn:
        left = self.additive()
        ops: dict[str, Callable[[int], bool]] = {
            "<": lambda c: c < 0,
            "<=": lambda c: c <= 0,
            ">": lambda c: c > 0,
            ">=": lambda c: c >= 0,
        }
        while self.tok.kind == "op" and self.tok.text in ops:
            op = ops[self.tok.text]
            self._operation(self.tok.pos)
            self.i += 1
            left = op_cmp(left, self.additive(), op)
        return left

    def additive(self) -> Fn:
        left = self.multiplicative()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.tok.text
            self._operation(self.tok.pos)
            self.i += 1
            left = op_arith(left, self.multiplicative(), op)
        return left

    def multiplicative(self) -> Fn:
        left = self.concat()
        while self.tok.kind == "op" and self.tok.text in ("*", "/", "%"):
            op = self.tok.text
            self._operation(self.tok.pos)
            self.i += 1
            left = op_arith(left, self.concat(), op)
        return left

    def concat(self) -> Fn:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text == "||":
            self._operation(self.tok.pos)
            self.i += 1
            left = op_concat(left, self.unary())
        return left

    def unary(self) -> Fn:
        t = self.tok
        if t.kind == "op" and t.text in ("-", "+"):
            self._operation(t.pos)
            self._nest(t.pos)
            self.i += 1
            inner = self.unary()
            self.nesting -= 1
            if t.text == "+":
                return inner

            def neg(env: Env) -> Any:
                v = inner(env)
                return None if v is None else -to_number(v)

            return neg
        return self.primary()

    def primary(self) -> Fn:
        t = self.tok
        self.i += 1
        if t.kind == "num":
            num: int | float = int(t.text) if t.text.isdigit() else float(t.text)
            return lambda env: num
        if t.kind == "str":
            s = t.text[1:-1].replace("''", "'")
            return lambda env: s
        if t.kind == "col":
            name = t.text[1:]
            if name.upper() in HEADERS:
                header = HEADERS[name.upper()]
                return lambda env: header(env[1])
            key = self.resolve(name, t.pos)
            self.columns.append(key)
            return lambda env: env[0].get(key)
        if t.kind == "op" and t.text == "(":
            self._nest(t.pos)
            inner = self.or_()
            self._take_op(")")
            self.nesting -= 1
            return inner
        if t.kind == "name":
            word = t.text.upper()
            if word == "NULL":
                return lambda env: None
            if word == "CASE":
                self._operation(t.pos)
                self._nest(t.pos)
                case = self.case()
                self.nesting -= 1
                return case
            if word in KEYWORDS:
                raise ExpressionError(f"unexpected keyword {t.text}", t.pos)
            if self.tok.kind == "op" and self.tok.text == "(":
                self._operation(t.pos)
                self._nest(t.pos)
                call = self.call(t)
                self.nesting -= 1
                return call
            raise ExpressionError(
                f"unknown name {t.text!r} (columns are written $COLUMN, strings in single quotes)", t.pos
            )
        raise ExpressionError(f"unexpected {t.text or 'end of expression'!r}", t.pos)

    def call(self, name: _Tok) -> Fn:
        self._take_op("(")
        args: list[Fn] = []
        if not (self.tok.kind == "op" and self.tok.text == ")"):
            args.append(self.or_())
            while self.tok.kind == "op" and self.tok.text == ",":
                self.i += 1
                args.append(self.or_())
        self._take_op(")")
        lname = name.text.lower()
        if lname == "operation_indicator":
            if len(args) != 3:
                raise ExpressionError("operation_indicator takes 3 arguments (delete, update, insert)", name.pos)
            d, u, ins = args

            def op_ind(env: Env) -> Any:
                op = getattr(getattr(env[1], "op", None), "value", "insert")
                return d(env) if op == "delete" else u(env) if op == "update" else ins(env)

            return op_ind
        if lname not in FUNCTIONS:
            raise ExpressionError(
                f"unknown function {name.text!r} (supported: {', '.join(sorted(FUNCTIONS))}, operation_indicator)",
                name.pos,
            )
        fn, lo, hi = FUNCTIONS[lname]
        if len(args) < lo or (hi is not None and len(args) > hi):
            want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            raise ExpressionError(f"{lname}() takes {want} argument(s), got {len(args)}", name.pos)
        if len(args) == 1:
            (a0,) = args
            return lambda env: fn(a0(env))
        return lambda env: fn(*(a(env) for a in args))

    def case(self) -> Fn:
        subject: Fn | None = None
        if not self._kw("WHEN"):
            subject = self.or_()
        arms: list[tuple[Fn, Fn]] = []
        while self._kw("WHEN"):
            self.i += 1
            cond = self.or_()
            self._take_kw("THEN")
            arms.append((cond, self.or_()))
        if not arms:
            raise ExpressionError("CASE needs at least one WHEN … THEN …", self.tok.pos)
        other: Fn = lambda env: None  # noqa: E731
        if self._kw("ELSE"):
            self.i += 1
            other = self.or_()
        self._take_kw("END")

        def case_fn(env: Env) -> Any:
            if subject is None:
                for cond, res in arms:
                    if truth(cond(env)):
                        return res(env)
            else:
                s = subject(env)
                for cond, res in arms:
                    v = cond(env)
                    if s is not None and v is not None and compare(s, v) == 0:
                        return res(env)
            return other(env)

        return case_fn


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression: ``evaluate(row, event)`` and the source columns it reads."""

    text: str
    evaluate_env: Fn
    columns: tuple[str, ...]

    def evaluate(self, row: dict[str, Any], event: Any = None) -> Any:
        return self.evaluate_env((row, event))


def compile_expression(text: str, resolve: Callable[[str, int], str] | None = None) -> Expression:
    """Parse ``text``; ``resolve(name, position)`` maps a ``$NAME`` to the row key (or raises ExpressionError).

    Without ``resolve`` names are kept as written (used to validate syntax before the schema is known).
    """
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("empty expression", 0)
    parser = _Parser(text, resolve or (lambda name, pos: name))
    fn = parser.parse()
    return Expression(text, fn, tuple(parser.columns))
