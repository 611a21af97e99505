"""The alert query language of SPEC §5, parsed once into a tree and evaluated per item.

    query   := or
    or      := and ("OR" and)*
    and     := unary (["AND"] unary)*          adjacent terms mean AND
    unary   := ("NOT" | "-") unary | primary
    primary := [field ":"] ( "(" or ")" | '"' phrase '"' | word["*"] )

A term matches whole folded words; the last word may carry a genitive or possessive trailing s;
a trailing * makes it a prefix; a phrase matches its words in sequence (see `matcher` for how
terms are found). Operators are upper-case only, so "and" is an ordinary word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from worker.core.charsets import without_ignorables
from worker.core.errors import QuerySyntaxError
from worker.core.matcher import ItemText, TermKey, normalize

_OPERATORS = frozenset({"AND", "OR", "NOT"})
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\()
      | (?P<rparen>\))
      | (?P<minus>-)(?=[\w"(*])
      | (?:(?P<field>title|summary|category):)?(?:"(?P<phrase>[^"]*)"|(?P<word>[^\s()"]+)|(?=\())
    )""",
    re.VERBOSE | re.IGNORECASE,
)


@dataclass(frozen=True)
class Term:
    """A word, prefix or phrase, limited to one field or (field None) matched everywhere.
    `pattern` is the term's normalised text (see matcher.normalize)."""

    source: str
    pattern: str
    prefix: bool
    field: str | None

    @property
    def key(self) -> TermKey:
        return (self.field, self.pattern, self.prefix)


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


Node = Term | Not | And | Or


def evaluate(node: Node, text: ItemText) -> bool:
    if isinstance(node, Term):
        return text.has(node.key)
    if isinstance(node, Not):
        return not evaluate(node.operand, text)
    if isinstance(node, And):
        return all(evaluate(op, text) for op in node.operands)
    return any(evaluate(op, text) for op in node.operands)


def all_terms(node: Node) -> list[Term]:
    if isinstance(node, Term):
        return [node]
    if isinstance(node, Not):
        return all_terms(node.operand)
    return [t for op in node.operands for t in all_terms(op)]


def positive_terms(node: Node, negated: bool = False) -> list[Term]:
    """Terms whose presence counts for the query (not under an odd number of NOTs)."""
    if isinstance(node, Term):
        return [] if negated else [node]
    if isinstance(node, Not):
        return positive_terms(node.operand, not negated)
    return [t for op in node.operands for t in positive_terms(op, negated)]


def matched_terms(node: Node, text: ItemText) -> list[str]:
    """The query's terms, as written, that are present in a matching item."""
    seen: dict[str, None] = {}
    for term in positive_terms(node):
        if text.has(term.key):
            seen.setdefault(term.source, None)
    return list(seen)


def make_term(raw: str, field_name: str | None = None, phrase: bool = False) -> Term:
    visible = without_ignorables(raw)  # "Chip*" pasted with a zero-width space after it is a prefix
    prefix = visible.endswith("*") and not phrase
    body = visible[:-1] if prefix else visible
    pattern = normalize(body)
    if not any(ch.isalnum() for ch in pattern):
        raise QuerySyntaxError(f"term {raw!r} has no letters or digits to match")
    source = f'"{raw}"' if phrase else raw
    if field_name:
        source = f"{field_name}:{source}"
    return Term(source, pattern, prefix, field_name.lower() if field_name else None)


# Parentheses and NOTs nested deeper than this are refused: no one writes them, and each level is
# a few frames of recursion here and in every walk of the tree (1,000 ended in a RecursionError).
MAX_NESTING = 50


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = _tokenize(query)
        self.pos = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, str | None] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str, str | None]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise QuerySyntaxError("empty query")
        node = self.parse_or(None)
        if self.peek() is not None:
            raise QuerySyntaxError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def parse_or(self, field_name: str | None) -> Node:
        operands = [self.parse_and(field_name)]
        while self._is_op("OR"):
            self.take()
            operands.append(self.parse_and(field_name))
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self, field_name: str | None) -> Node:
        operands = [self.parse_unary(field_name)]
        while (token := self.peek()) is not None and token[0] != "rparen" and not self._is_op("OR"):
            if self._is_op("AND"):
                self.take()
            operands.append(self.parse_unary(field_name))
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_unary(self, field_name: str | None) -> Node:
        if self._is_op("NOT") or self._kind() == "minus":
            self.take()
            with self._nested():
                return Not(self.parse_unary(field_name))
        return self.parse_primary(field_name)

    def parse_primary(self, field_name: str | None) -> Node:
        token = self.peek()
        if token is None:
            raise QuerySyntaxError("query ends where a term was expected")
        kind, value, token_field = self.take()
        field_name = token_field or field_name
        if kind == "lparen":
            with self._nested():
                node = self.parse_or(field_name)
            if self._kind() != "rparen":
                raise QuerySyntaxError("missing closing parenthesis")
            self.take()
            return node
        if kind == "phrase":
            return make_term(value, field_name, phrase=True)
        if kind == "word" and value not in _OPERATORS:
            return make_term(value, field_name)
        raise QuerySyntaxError(f"unexpected {value!r} where a term was expected")

    @contextmanager
    def _nested(self) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise QuerySyntaxError(f"nested more than {MAX_NESTING} levels deep (parentheses, NOT, -)")
        try:
            yield
        finally:
            self.depth -= 1

    def _kind(self) -> str | None:
        token = self.peek()
        return token[0] if token else None

    def _is_op(self, name: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "word" and token[1] == name and token[2] is None


def _tokenize(query: str) -> list[tuple[str, str, str | None]]:
    tokens: list[tuple[str, str, str | None]] = []
    pos = 0
    stripped_end = len(query.rstrip())
    while pos < stripped_end:
        match = _TOKEN.match(query, pos)
        if match is None or match.end() == pos:
            rest = query[pos:].strip()
            if rest.startswith('"'):
                raise QuerySyntaxError("unclosed quotation mark")
            raise QuerySyntaxError(f"cannot read {rest[:20]!r}")
        pos = match.end()
        field_name = match.group("field")
        field_name = field_name.lower() if field_name else None
        for kind in ("lparen", "rparen", "minus", "phrase", "word"):
            value = match.group(kind)
            if value is not None:
                tokens.append((kind, value, field_name))
                break
        else:  # a field prefix directly before "("
            tokens.append(("lparen", "(", field_name))
            pos += len(query[pos:]) - len(query[pos:].lstrip()) + 1
    return tokens


def parse_query(query: str) -> Node:
    """Parse a query string; raises QuerySyntaxError with a message a person understands."""
    return _Parser(query).parse()


def lowercase_operators(query: str) -> list[str]:
    """Bare words of a query that spell an operator in another case ('and', 'Or'): they are
    searched as words (operators are upper case), though their writer may have meant AND, OR
    or NOT. Quoted ("and") or with a field (title:and), a word is plainly meant as one."""
    try:
        tokens = _tokenize(query)
    except QuerySyntaxError:
        return []
    return [
        value
        for kind, value, field_name in tokens
        if kind == "word" and field_name is None and value.upper() in _OPERATORS and value not in _OPERATORS
    ]


_PLAIN_TERM = re.compile(r'[^"()]+')


def is_plain_term(entry: str) -> bool:
    """A topic entry without query syntax: one term, or (with spaces) one phrase."""
    return (
        _PLAIN_TERM.fullmatch(entry.strip()) is not None
        and not _OPERATORS.intersection(entry.split())
        and not entry.strip().startswith("-")
    )


def parse_term_list(entries: Iterable[str]) -> Node:
    """Topic terms: each entry is a term (spaces make a phrase) unless it uses query syntax."""
    nodes: list[Node] = []
    for entry in entries:
        entry_words = entry.split()
        plain = is_plain_term(entry)
        if plain and len(entry_words) > 1:
            nodes.append(make_term(" ".join(entry_words), phrase=True))
        elif plain:
            nodes.append(make_term(entry.strip()))
        else:
            nodes.append(parse_query(entry))
    if not nodes:
        raise QuerySyntaxError("no terms")
    return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))
