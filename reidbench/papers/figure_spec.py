"""Read and check the ``figures:`` of a paper file: each figure names the cells it is drawn from.

Forms by kind (see docs/figures.md):

- ``ranklist`` / ``cam`` / ``attention`` / ``featuremap``: ``panels:`` a list of ``{label, table, row, dataset}``
  (or ``{label, cited: why}`` for a method the paper cites and reidbench does not build), with ``queries``,
  ``seed``; ``top`` (ranklist); ``erase: [min, max]`` and ``per_map`` (featuremap);
- ``bars``: ``table:`` every row of that table on each of its dataset groups and metrics;
- ``curve``: ``table``, ``dataset``, ``subplots``, ``series`` and a ``row:`` template over ``{subplot}`` and
  ``{series}``; ``value`` is the ``metrics.jsonl`` key drawn against the epoch (default ``total``, the loss);
- ``sweep``: ``x: {name, values}``, ``datasets``, ``metrics`` and ``series:`` of ``{label, table, row}`` with
  ``{x}`` in the row template.

The caption defaults to the caption of the figure's ``table:``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reidbench.errors import ReidbenchError
from reidbench.papers.schema import FIGURE_KINDS, IMAGE_KINDS, METRICS, Figure, FigurePanel, Table


class FigureSpecError(ReidbenchError):
    """A figure entry problem: names the file, the figure and the key."""


class _Reader:
    def __init__(self, data: dict[str, Any], tables: dict[str, Table], where: str, source: Path) -> None:
        self.data, self.tables, self.where, self.source = data, tables, where, source

    def fail(self, key: str, expected: str, got: Any) -> FigureSpecError:
        return FigureSpecError(f"{self.source}: {self.where}.{key}: expected {expected}, got {got!r}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, expected: str = "") -> Any:
        value = self.data.get(key, default)
        if value is None and default is None:
            raise self.fail(key, expected or getattr(kind, "__name__", str(kind)), value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            raise self.fail(key, expected or getattr(kind, "__name__", str(kind)), value)
        return value

    def table(self, key: str, name: Any) -> Table:
        if name not in self.tables:
            raise self.fail(key, f"one of the paper's tables ({', '.join(self.tables)})", name)
        return self.tables[name]

    def cell(self, key: str, label: str, table: str, row: str, dataset: str, **extra: Any) -> FigurePanel:
        spec = self.table(f"{key}.table", table)
        rows = {r.name: r for r in spec.rows}
        if row not in rows:
            raise self.fail(f"{key}.row", f"a row of {table} ({', '.join(rows)})", row)
        if dataset not in spec.groups:
            raise self.fail(f"{key}.dataset", f"a dataset group of {table} ({', '.join(spec.groups)})", dataset)
        if dataset not in rows[row].recipes:
            raise self.fail(f"{key}.row", f"a row with a recipe for {dataset} (a cell reidbench can run)",
                            f"{table} / {row}")
        return FigurePanel(label=label, table=table, row=row, dataset=dataset, **extra)


def _panels(reader: _Reader) -> list[FigurePanel]:
    raw = reader.get("panels", list, expected="a list of {label, table, row, dataset} or {label, cited}")
    panels = []
    for index, item in enumerate(raw):
        key = f"panels[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            raise reader.fail(key, "a mapping with a label", item)
        if item.get("cited"):
            panels.append(FigurePanel(label=item["label"], cited=str(item["cited"])))
            continue
        missing = [k for k in ("table", "row", "dataset") if not isinstance(item.get(k), str)]
        if missing:
            raise reader.fail(key, "table, row and dataset (or cited: why it is left out)", item)
        panels.append(reader.cell(key, item["label"], item["table"], item["row"], item["dataset"]))
    if not any(not p.cited for p in panels):
        raise reader.fail("panels", "at least one panel from a cell of the paper", raw)
    return panels


def _bars(reader: _Reader) -> tuple[list[FigurePanel], list[str]]:
    table = reader.table("table", reader.data.get("table"))
    panels = [reader.cell("table", row.name, table.id, row.name, group) for group in table.groups
              for row in table.rows if group in row.recipes]
    return panels, list(table.metrics)


def _curve(reader: _Reader) -> list[FigurePanel]:
    table, dataset = reader.get("table", str), reader.get("dataset", str)
    template = reader.get("row", str, expected="a row name template with {subplot} and {series}")
    subplots = reader.get("subplots", list, expected="a list of subplot names")
    series = reader.get("series", list, expected="a list of series names")
    return [reader.cell("row", str(name), table, template.format(subplot=subplot, series=name), dataset,
                        group=str(subplot)) for subplot in subplots for name in series]


def _sweep(reader: _Reader) -> tuple[list[FigurePanel], list[str], str]:
    x = reader.get("x", dict, expected="{name: ..., values: [...]}")
    if not isinstance(x.get("name"), str) or not isinstance(x.get("values"), list) or not x["values"]:
        raise reader.fail("x", "{name: ..., values: [...]}", x)
    datasets = reader.get("datasets", list, expected="a list of dataset groups")
    metrics = reader.get("metrics", list, expected="a list of metrics")
    series = reader.get("series", list, expected="a list of {label, table, row} with {x} in the row")
    panels = []
    for index, item in enumerate(series):
        key = f"series[{index}]"
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("label", "table", "row")):
            raise reader.fail(key, "a mapping with label, table and row (a template with {x})", item)
        panels += [reader.cell(key, item["label"], item["table"], item["row"].format(x=value), dataset,
                               group=dataset, x=value) for dataset in datasets for value in x["values"]]
    return panels, [str(m) for m in metrics], x["name"]


def _figure(data: Any, tables: dict[str, Table], index: int, source: Path) -> Figure:
    where = f"figures[{index}]"
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise FigureSpecError(f"{source}: {where}: expected a mapping with an id, got {data!r}")
    reader = _Reader(data, tables, f"{where} ({data['id']})", source)
    kind = data.get("kind")
    if kind not in FIGURE_KINDS:
        raise reader.fail("kind", f"one of {', '.join(FIGURE_KINDS)}", kind)
    caption = data.get("caption") or (tables[data["table"]].caption if data.get("table") in tables else None)
    if not isinstance(caption, str):
        raise reader.fail("caption", "the printed caption (or a table: whose caption it is)", caption)
    metrics: list[str] = []
    x_name = ""
    if kind in IMAGE_KINDS:
        panels = _panels(reader)
        datasets = {p.dataset for p in panels if not p.cited}
        if len(datasets) > 1:
            raise reader.fail("panels", "one dataset group for every panel (the same query images)",
                              sorted(datasets))
    elif kind == "bars":
        panels, metrics = _bars(reader)
    elif kind == "curve":
        panels = _curve(reader)
    else:
        panels, metrics, x_name = _sweep(reader)
    for metric in metrics:
        if metric not in METRICS:
            raise reader.fail("metrics", f"metrics among {', '.join(METRICS)}", metric)
    erase = data.get("erase")
    if erase is not None and (not isinstance(erase, list) or len(erase) != 2
                              or not all(isinstance(v, (int, float)) and 0 < v < 1 for v in erase)
                              or erase[0] > erase[1]):
        raise reader.fail("erase", "[min, max] fractions of the image area in (0, 1)", erase)
    queries, seed, top = reader.get("queries", int, 4), reader.get("seed", int, 0), reader.get("top", int, 10)
    if queries < 1 or top < 1:
        raise reader.fail("queries", "a positive number of query images (and top)", (queries, top))
    return Figure(id=data["id"], kind=kind, caption=caption, panels=panels, queries=queries, seed=seed, top=top,
                  erase=tuple(erase) if erase else None, per_map=bool(data.get("per_map", False)),
                  value=reader.get("value", str, "total"), metrics=metrics, x_name=x_name,
                  notes=[str(n) for n in data.get("notes") or []])


def load_figures(raw: Any, tables: list[Table], source: Path) -> list[Figure]:
    """The paper file's ``figures:`` list, checked against its tables (every panel names a runnable cell)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise FigureSpecError(f"{source}: figures: expected a list of figure entries, got {raw!r}")
    by_id = {t.id: t for t in tables}
    figures = [_figure(item, by_id, index, source) for index, item in enumerate(raw)]
    ids = [f.id for f in figures]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise FigureSpecError(f"{source}: figures: {duplicate!r} appears twice")
    return figures
