"""Genotypes of the few-shot DARTS space: an immutable value type, validation and (de)serialisation.

A genotype is a pair of cells (normal + reduction). Each cell has 3 intermediate nodes; each node sums
two ``(op, input)`` pairs on two distinct inputs, where input 0 is the output of the cell two back,
input 1 the previous cell and inputs 2, 3 the earlier intermediate nodes. The cell output concatenates
nodes [2, 3, 4]. See MetaNTK-NAS (Wang et al., CVPR 2022, https://arxiv.org/abs/2203.09137) and DARTS
(Liu et al., https://arxiv.org/abs/1806.09055).

Two text forms are read:

* the published DARTS notation, as printed in the MetaNTK-NAS scripts and MetaNAS, either nested per node
  (``Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], ...], normal_concat=[2, 3, 4], ...)``)
  or flat (``normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...]``), with ``range(2, 5)`` allowed;
* the canonical JSON form written by :meth:`Genotype.to_json`.

Both are parsed by a small tokenizer and recursive-descent parser: nothing is ever passed to ``eval``.
This module uses the standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import GenotypeError

__all__ = ["GENOTYPE_OPS", "NUM_NODES", "CONCAT", "Genotype", "GenotypeError", "GenotypeLike"]

#: Ops a searched cell may use: the few-shot DARTS space without ``none`` (names verbatim from MNN).
GENOTYPE_OPS: tuple[str, ...] = (
    "skip_connect",
    "sep_conv_3x3",
    "dil_conv_3x3",
    "avg_pool_3x3BN",
    "max_pool_3x3BN",
    "conv_1x5_5x1",
    "conv_3x3",
)
NUM_NODES = 3
CONCAT: tuple[int, ...] = (2, 3, 4)

# MetaNAS names pool+BN ops without the BN suffix; say so when someone feeds one in.
_METANAS_ALIASES = {"max_pool_3x3": "max_pool_3x3BN", "avg_pool_3x3": "avg_pool_3x3BN"}

Pair = tuple[str, int]
Node = tuple[Pair, Pair]
Cell = tuple[Node, Node, Node]


@dataclass(frozen=True)
class Genotype:
    """A normal + reduction cell pair of the few-shot DARTS space.

    Attributes:
        normal: 3 nodes, each a pair of ``(op_name, input_index)`` tuples.
        reduce: the same for the reduction cell.
        normal_concat: states concatenated into the cell output; always ``(2, 3, 4)``.
        reduce_concat: the same for the reduction cell.

    Construct through :meth:`parse`, :meth:`from_dict` or :meth:`coerce`; the constructor validates too.
    """

    normal: Cell
    reduce: Cell
    normal_concat: tuple[int, ...] = CONCAT
    reduce_concat: tuple[int, ...] = CONCAT

    def __post_init__(self) -> None:
        for name in ("normal", "reduce"):
            object.__setattr__(self, name, _validate_cell(name, getattr(self, name)))
        for name in ("normal_concat", "reduce_concat"):
            concat = getattr(self, name)
            if not isinstance(concat, (list, tuple, range)) or tuple(concat) != CONCAT:
                raise GenotypeError(f"{name}: expected [2, 3, 4] (3 intermediate nodes), found {concat!r}")
            object.__setattr__(self, name, CONCAT)

    # ----------------------------------------------------------------------------------------- reading
    @classmethod
    def parse(cls, text: str, *, naming: str = "mnn") -> Genotype:
        """Parse a genotype from DARTS notation or canonical JSON.

        Args:
            text: ``Genotype(normal=..., reduce=...)`` as published (nested or flat, ``range(2, 5)`` ok),
                or a JSON object as written by :meth:`to_json`.
            naming: ``"mnn"`` (MetaNTK-NAS op names, the default) or ``"metanas"``, where
                ``max_pool_3x3`` / ``avg_pool_3x3`` mean pool + BN and are read as ``*_3x3BN``.

        Raises:
            GenotypeError: malformed text or an invalid cell; the message names cell, node and token.
        """
        if not isinstance(text, str):
            raise GenotypeError(f"expected genotype text (str), found {type(text).__name__}")
        if naming not in ("mnn", "metanas"):
            raise GenotypeError(f"unknown op naming {naming!r}; expected 'mnn' or 'metanas'")
        stripped = text.strip()
        if not stripped:
            raise GenotypeError("empty genotype text; expected 'Genotype(normal=..., reduce=...)' or a JSON object")
        if stripped.startswith("{"):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError as e:
                raise GenotypeError(f"malformed genotype JSON: {e}") from e
            return cls.from_dict(data)
        fields = _DartsParser(stripped).parse_genotype()
        if naming == "metanas":
            fields = {k: _rename_ops(v, _METANAS_ALIASES) if k in ("normal", "reduce") else v
                      for k, v in fields.items()}
        return cls.from_dict(fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """Build a genotype from its JSON dict (``normal``, ``reduce`` and optional concat lists)."""
        if not isinstance(data, Mapping):
            raise GenotypeError(f"expected a genotype dict, found {type(data).__name__}")
        unknown = set(data) - {"normal", "reduce", "normal_concat", "reduce_concat"}
        if unknown:
            raise GenotypeError(
                f"unknown genotype field(s) {sorted(unknown)}; expected normal, reduce, normal_concat, reduce_concat"
            )
        for key in ("normal", "reduce"):
            if key not in data:
                raise GenotypeError(f"genotype is missing the '{key}' cell")
        return cls(
            normal=data["normal"],
            reduce=data["reduce"],
            normal_concat=data.get("normal_concat", CONCAT),
            reduce_concat=data.get("reduce_concat", CONCAT),
        )

    @classmethod
    def coerce(cls, obj: GenotypeLike) -> Genotype:
        """Return ``obj`` as a :class:`Genotype`: accepts a Genotype, DARTS/JSON text or a JSON dict."""
        if isinstance(obj, Genotype):
            return obj
        if isinstance(obj, str):
            return cls.parse(obj)
        if isinstance(obj, Mapping):
            return cls.from_dict(obj)
        raise GenotypeError(f"expected a Genotype, genotype text or dict, found {type(obj).__name__}")

    # ----------------------------------------------------------------------------------------- writing
    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-JSON form: nested lists, e.g. ``{"normal": [[["sep_conv_3x3", 0], ...], ...]}``."""
        return {
            "normal": [[[op, idx] for op, idx in node] for node in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[[op, idx] for op, idx in node] for node in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON text (``Genotype.parse`` reads it back)."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_darts(self, *, naming: str = "mnn") -> str:
        """The published nested DARTS notation.

        Args:
            naming: ``"mnn"`` gives the MetaNTK-NAS script form (``[2, 3, 4]``); ``"metanas"`` the MetaNAS
                form (pool+BN written ``max_pool_3x3``, concat ``range(2, 5)``). Both are byte-identical to
                the published strings.
        """
        names = {v: k for k, v in _METANAS_ALIASES.items()} if naming == "metanas" else {}
        concat = "range(2, 5)" if naming == "metanas" else "[2, 3, 4]"

        def cell(c: Cell) -> str:
            nodes = ("[" + ", ".join(f"('{names.get(op, op)}', {i})" for op, i in node) + "]" for node in c)
            return "[" + ", ".join(nodes) + "]"

        return (
            f"Genotype(normal={cell(self.normal)}, normal_concat={concat}, "
            f"reduce={cell(self.reduce)}, reduce_concat={concat})"
        )

    def __str__(self) -> str:
        return self.to_darts()

    @property
    def ops(self) -> tuple[str, ...]:
        """All op names, normal cell first (12 entries)."""
        return tuple(op for c in (self.normal, self.reduce) for node in c for op, _ in node)


GenotypeLike = Genotype | str | Mapping[str, Any]


# --------------------------------------------------------------------------------------------- validation
def _validate_cell(cell_name: str, cell: Any) -> Cell:
    where = f"{cell_name} cell"
    if not isinstance(cell, (list, tuple)):
        raise GenotypeError(f"{where}: expected a list of nodes, found {type(cell).__name__}")
    cell = list(cell)
    # The flat DARTS form lists 2 pairs per node one after the other.
    if len(cell) == 2 * NUM_NODES and all(_looks_like_pair(p) for p in cell):
        cell = [cell[i : i + 2] for i in range(0, len(cell), 2)]
    if len(cell) != NUM_NODES:
        raise GenotypeError(f"{where}: expected {NUM_NODES} nodes (or {2 * NUM_NODES} flat pairs), found {len(cell)}")
    nodes = []
    for n, node in enumerate(cell):
        here = f"{where}, node {n}"
        if not isinstance(node, (list, tuple)) or len(node) != 2:
            raise GenotypeError(f"{here}: expected 2 (op, input) pairs, found {node!r}")
        pairs = []
        for pair in node:
            if not _looks_like_pair(pair):
                raise GenotypeError(f"{here}: expected an (op, input) pair, found {pair!r}")
            op, idx = pair
            if op not in GENOTYPE_OPS:
                hint = ""
                if op in _METANAS_ALIASES:
                    hint = f" (MetaNAS's '{op}' is pool+BN: write '{_METANAS_ALIASES[op]}')"
                elif op == "none":
                    hint = " ('none' is a search-space placeholder, never part of a cell)"
                raise GenotypeError(f"{here}: unknown op {op!r}{hint}; known ops: {', '.join(GENOTYPE_OPS)}")
            if not 0 <= idx < 2 + n:
                raise GenotypeError(f"{here}: input index {idx} out of range; node {n} reads inputs 0..{1 + n}")
            pairs.append((op, idx))
        if pairs[0][1] == pairs[1][1]:
            raise GenotypeError(f"{here}: both ops read input {pairs[0][1]}; a node needs two distinct inputs")
        nodes.append(tuple(pairs))
    return tuple(nodes)  # type: ignore[return-value]


def _rename_ops(cell: Any, names: Mapping[str, str]) -> Any:
    """Rename ops in a raw (nested or flat) parsed cell; anything malformed is left for validation."""
    if _looks_like_pair(cell):
        return [names.get(cell[0], cell[0]), cell[1]]
    if isinstance(cell, list):
        return [_rename_ops(c, names) for c in cell]
    return cell


def _looks_like_pair(p: Any) -> bool:
    return (
        isinstance(p, (list, tuple))
        and len(p) == 2
        and isinstance(p[0], str)
        and isinstance(p[1], int)
        and not isinstance(p[1], bool)
    )


# --------------------------------------------------------------------------------------------- DARTS text
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'[^'\\\n]*'|"[^"\\\n]*")
      | (?P<int>-?\d+)
      | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
      | (?P<punct>[\[\]\(\),=])
    )""",
    re.VERBOSE,
)


class _DartsParser:
    """Recursive-descent parser for the Python-literal subset used by published genotypes."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, Any, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None:
                col = pos + len(text[pos:]) - len(text[pos:].lstrip())
                raise GenotypeError(f"malformed genotype text at position {col}: unexpected {text[col : col + 12]!r}")
            kind = m.lastgroup
            raw = m.group(kind)
            start = m.start(kind)
            value: Any = raw
            if kind == "str":
                value = raw[1:-1]
            elif kind == "int":
                value = int(raw)
            self.tokens.append((kind, value, start))
            pos = m.end()
        self.i = 0

    # token helpers
    def _peek(self) -> tuple[str, Any, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", None, len(self.text))

    def _fail(self, expected: str) -> GenotypeError:
        kind, value, pos = self._peek()
        found = "end of text" if kind == "end" else repr(value if kind != "str" else f"'{value}'")
        return GenotypeError(f"malformed genotype text at position {pos}: expected {expected}, found {found}")

    def _expect(self, punct: str) -> None:
        kind, value, _ = self._peek()
        if kind != "punct" or value != punct:
            raise self._fail(repr(punct))
        self.i += 1

    def _accept(self, punct: str) -> bool:
        kind, value, _ = self._peek()
        if kind == "punct" and value == punct:
            self.i += 1
            return True
        return False

    # grammar
    def parse_genotype(self) -> dict[str, Any]:
        kind, value, _ = self._peek()
        if kind != "name" or value != "Genotype":
            raise self._fail("'Genotype(' or a JSON object")
        self.i += 1
        self._expect("(")
        fields: dict[str, Any] = {}
        while not self._accept(")"):
            kind, key, _ = self._peek()
            if kind != "name":
                raise self._fail("a field name (normal, normal_concat, reduce, reduce_concat)")
            if key in fields:
                raise GenotypeError(f"malformed genotype text: field {key!r} given twice")
            self.i += 1
            self._expect("=")
            fields[key] = self._value()
            if not self._accept(","):
                self._expect(")")
                break
        if self._peek()[0] != "end":
            raise self._fail("end of text")
        return fields

    def _value(self) -> Any:
        kind, value, _ = self._peek()
        if kind in ("str", "int"):
            self.i += 1
            return value
        if kind == "punct" and value in "[(":
            self.i += 1
            close = "]" if value == "[" else ")"
            items = []
            while not self._accept(close):
                items.append(self._value())
                if not self._accept(","):
                    self._expect(close)
                    break
            return items
        if kind == "name" and value == "range":
            self.i += 1
            self._expect("(")
            args = [self._value()]
            while self._accept(","):
                if self._accept(")"):
                    break
                args.append(self._value())
            else:
                self._expect(")")
            if not (1 <= len(args) <= 3 and all(isinstance(a, int) for a in args)):
                raise GenotypeError(f"malformed genotype text: range() takes 1 to 3 integers, found {args!r}")
            return list(range(*args))
        raise self._fail("a string, an integer, a list, a tuple or range(...)")
