"""Read and check ``recipes/<paper>/paper.yaml``; select cells by table, row and dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reidbench.errors import ReidbenchError, UnknownNameError
from reidbench.papers.schema import (
    DEFAULT_TOLERANCES,
    KIND_UNITS,
    METRICS,
    PARAMS_CONVENTIONS,
    TABLE_KINDS,
    Cell,
    DatasetColumn,
    Inconsistency,
    Paper,
    Row,
    Table,
    Tolerance,
    printed_number,
)
from reidbench.recipes.loading import read_mapping, recipe_dirs, resolve_path

PAPER_FILE = "paper.yaml"


class PaperSpecError(ReidbenchError):
    """A paper file problem: names the file, the key path and what was expected."""


def list_papers(folders: list[Path] | None = None) -> list[str]:
    """Paper keys: every ``<key>/paper.yaml`` in users' recipe folders and the shipped recipes."""
    return sorted({p.parent.name for folder in folders or recipe_dirs() for p in folder.glob(f"*/{PAPER_FILE}")})


def paper_path(key: str, folders: list[Path] | None = None) -> Path:
    """A paper file by path, or by key: the first ``<key>/paper.yaml`` in the recipe folders."""
    path = Path(key)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    for folder in folders or recipe_dirs():
        path = folder / key.lower() / PAPER_FILE
        if path.is_file():
            return path
    raise UnknownNameError("paper", key, list_papers(folders))


def _need(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, source: Path) -> Any:
    if key not in data:
        raise PaperSpecError(f"{source}: {where}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise PaperSpecError(f"{source}: {where}.{key}: expected {expected}, got {value!r}")
    return value


def _values(raw: Any, n: int, where: str, source: Path) -> list[float | None]:
    if not isinstance(raw, list) or len(raw) != n:
        raise PaperSpecError(f"{source}: {where}: expected a list of {n} values (null for '-'), got {raw!r}")
    out: list[float | None] = []
    for value in raw:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise PaperSpecError(f"{source}: {where}: expected numbers or null, got {value!r}")
        out.append(None if value is None else float(value))
    return out


def _row(data: Any, table: dict[str, Any], datasets: dict[str, DatasetColumn], where: str,
         source: Path) -> Row:
    if not isinstance(data, dict):
        raise PaperSpecError(f"{source}: {where}: expected a mapping, got {data!r}")
    name = _need(data, "name", str, where, source)
    where = f"{where} ({name})"
    groups, metrics = table["groups"], table["metrics"]
    values = {}
    for key, raw in (data.get("values") or {}).items():
        if key not in groups:
            raise PaperSpecError(f"{source}: {where}.values: unknown column group {key!r}; "
                                 f"expected one of: {', '.join(groups)}")
        values[key] = _values(raw, len(metrics), f"{where}.values.{key}", source)
    recipes: dict[str, str] = {}
    template = data.get("recipe")
    if template is not None:
        if not isinstance(template, str):
            raise PaperSpecError(f"{source}: {where}.recipe: expected a recipe name template, got {template!r}")
        for key in data.get("reproduce", groups):
            recipes[key] = template.format(slug=datasets[key].slug, train=datasets[key].train,
                                           test=datasets[key].test)
    for key, recipe in (data.get("recipes") or {}).items():
        recipes[key] = recipe
    for key, recipe in recipes.items():
        if key not in groups:
            raise PaperSpecError(f"{source}: {where}.recipes: unknown column group {key!r}")
        try:
            resolve_path(recipe)
        except ReidbenchError as error:
            raise PaperSpecError(f"{source}: {where}: recipe {recipe!r} for {key} does not exist") from error
    notes = data.get("notes") or {}
    if isinstance(notes, str):
        notes = {"*": notes}
    overrides = _overrides(data.get("set"), f"{where}.set", source)
    eval_overrides = _overrides(data.get("evaluate"), f"{where}.evaluate", source)
    bad = [o for o in eval_overrides if not o.startswith("eval.")]
    if bad:
        raise PaperSpecError(f"{source}: {where}.evaluate: expected eval.* overrides only, got {bad[0]!r}")
    convention = _convention(data.get("params_convention"), f"{where}.params_convention", source)
    return Row(name=name, values=values, cited=bool(data.get("cited", False)), model=data.get("model"),
               recipes=recipes, extra={k: str(v) for k, v in (data.get("extra") or {}).items()},
               notes={str(k): str(v) for k, v in notes.items()}, overrides=overrides,
               eval_overrides=eval_overrides, params_convention=convention)


def _convention(raw: Any, where: str, source: Path) -> str | None:
    if raw is not None and raw not in PARAMS_CONVENTIONS:
        raise PaperSpecError(f"{source}: {where}: expected one of {', '.join(PARAMS_CONVENTIONS)}, got {raw!r}")
    return raw


def _tolerances(raw: Any, where: str, source: Path) -> dict[str, Tolerance]:
    """``tolerance:`` as a number (percentage points for accuracy) or per kind: a number in the kind's unit,
    ``"0.5%"`` of the printed value, or ``rounding`` (half a unit of the printed value's last digit)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raw = {"accuracy": raw}
    out = {}
    for kind, spec in raw.items():
        if kind not in KIND_UNITS:
            raise PaperSpecError(f"{source}: {where}.{kind}: unknown kind of number; expected one of: "
                                 f"{', '.join(KIND_UNITS)}")
        text = str(spec).strip()
        try:
            if text == "rounding":
                out[kind] = Tolerance(kind, rounding=True)
            elif text.endswith("%"):
                out[kind] = Tolerance(kind, float(text[:-1]), relative=True)
            elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
                out[kind] = Tolerance(kind, float(spec))
            else:
                raise ValueError(text)
        except ValueError:
            raise PaperSpecError(f"{source}: {where}.{kind}: expected a number (in{KIND_UNITS[kind]}), a "
                                 f"percentage such as '0.5%' or 'rounding', got {spec!r}") from None
        if out[kind].value < 0:
            raise PaperSpecError(f"{source}: {where}.{kind}: expected 0 or more, got {spec!r}")
    return out


def _overrides(raw: Any, where: str, source: Path) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(o, str) and "=" in o for o in raw):
        raise PaperSpecError(f"{source}: {where}: expected a list of key.path=value strings, got {raw!r}")
    return list(raw)


def _table(data: Any, datasets: dict[str, DatasetColumn], index: int, source: Path) -> Table:
    where = f"tables[{index}]"
    if not isinstance(data, dict):
        raise PaperSpecError(f"{source}: {where}: expected a mapping, got {data!r}")
    table_id = _need(data, "id", str, where, source)
    where = f"{where} ({table_id})"
    kind = data.get("kind", "results")
    if kind not in TABLE_KINDS:
        raise PaperSpecError(f"{source}: {where}.kind: expected one of {', '.join(TABLE_KINDS)}, got {kind!r}")
    groups = data.get("groups", []) if kind == "architecture" else _need(data, "groups", list, where, source)
    metrics = data.get("metrics", []) if kind == "architecture" else _need(data, "metrics", list, where, source)
    for key in groups:
        if key not in datasets:
            raise PaperSpecError(f"{source}: {where}.groups: {key!r} is not one of the paper's datasets "
                                 f"({', '.join(datasets)})")
    for metric in metrics:
        if metric not in METRICS:
            raise PaperSpecError(f"{source}: {where}.metrics: unknown metric {metric!r}; "
                                 f"expected one of: {', '.join(METRICS)}")
    spec = {"groups": groups, "metrics": metrics}
    rows = [_row(r, spec, datasets, f"{where}.rows[{i}]", source) for i, r in enumerate(data.get("rows") or [])]
    names = [r.name for r in rows]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise PaperSpecError(f"{source}: {where}: row {duplicate!r} appears twice")
    column = data.get("params_column")
    for row in rows if column else []:
        printed = row.extra.get(column)
        if printed is not None and printed_number(printed) is None:
            raise PaperSpecError(f"{source}: {where}: row {row.name!r}: extra.{column}: expected a parameter count "
                                 f"in millions such as '2.3M' or '~24M', got {printed!r}")
    return Table(id=table_id, caption=str(data.get("caption", "")), kind=kind, groups=list(groups),
                 metrics=list(metrics), rows=rows, ablation=bool(data.get("ablation", False)),
                 printed=bool(data.get("printed", True)), notes=list(data.get("notes") or []),
                 content=dict(data.get("content") or {}),
                 params_convention=_convention(data.get("params_convention"), f"{where}.params_convention",
                                               source) or "total",
                 params_column=column, tolerances=_tolerances(data.get("tolerance"), f"{where}.tolerance", source))


def _inconsistencies(raw: Any, tables: list[Table], source: Path) -> list[Inconsistency]:
    """Each entry names two or more cells ("Table 1 / AaP-ReID / C") that the paper prints with different values
    for one recipe; the cells must exist and share their recipe and its `set:`."""
    out = []
    for index, entry in enumerate(raw or []):
        where = f"inconsistencies[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("cells"), list) or len(entry["cells"]) < 2:
            raise PaperSpecError(f"{source}: {where}: expected a mapping with cells (two or more "
                                 f"'table / row / group' labels) and note, got {entry!r}")
        runs = set()
        for label in entry["cells"]:
            table_id, row_name, group = (part.strip() for part in (str(label).rsplit(" / ", 2) + ["", ""])[:3])
            table = next((t for t in tables if t.id == table_id), None)
            row = next((r for r in table.rows if r.name == row_name), None) if table else None
            if row is None or group not in row.values:
                raise PaperSpecError(f"{source}: {where}.cells: no cell {label!r} with printed values")
            runs.add((row.recipes.get(group), tuple(row.overrides)))
        if len(runs) != 1:
            raise PaperSpecError(f"{source}: {where}: the cells {entry['cells']} do not share one recipe and set:")
        out.append(Inconsistency(tuple(str(c) for c in entry["cells"]), str(entry.get("note", ""))))
    return out


def load_paper(key: str, folders: list[Path] | None = None) -> Paper:
    source = paper_path(key, folders)
    data = read_mapping(source, PaperSpecError)
    datasets = {}
    for name, raw in (_need(data, "datasets", dict, "paper", source)).items():
        if not isinstance(raw, dict) or "train" not in raw:
            raise PaperSpecError(f"{source}: datasets.{name}: expected a mapping with train (and test, variant)")
        datasets[str(name)] = DatasetColumn(str(name), raw["train"], raw.get("test", raw["train"]),
                                            raw.get("variant"))
    tables = [_table(t, datasets, i, source) for i, t in enumerate(_need(data, "tables", list, "paper", source))]
    defaults = _tolerances(DEFAULT_TOLERANCES, "tolerance", source)
    return Paper(key=_need(data, "paper", str, "paper", source), title=str(data.get("title", "")),
                 citation=str(data.get("citation", "")), source=str(data.get("source", "")),
                 tolerances={**defaults, **_tolerances(data.get("tolerance"), "tolerance", source)},
                 datasets=datasets, tables=tables, notes=list(data.get("notes") or []),
                 docs=str(data.get("docs", "")),
                 inconsistencies=_inconsistencies(data.get("inconsistencies"), tables, source))


# ---- selection -------------------------------------------------------------------------------

def _norm(text: str) -> str:
    return " ".join(text.lower().replace("→", "->").split())


def matches(query: str | None, *names: str) -> bool:
    """Case-insensitive prefix match against any of the names."""
    return query is None or any(_norm(n).startswith(_norm(query)) for n in names if n)


def _narrow(query: str | None, items: list[Any], names: Any) -> list[Any]:
    # an exact name wins over prefixes, so "Table I" does not also pick "Table II" and "Table III"
    if query is None:
        return items
    exact = [item for item in items if any(_norm(n) == _norm(query) for n in names(item) if n)]
    return exact or [item for item in items if matches(query, *names(item))]


def select_cells(paper: Paper, table: str | None = None, row: str | None = None,
                 dataset: str | None = None, ablation_only: bool = False) -> list[Cell]:
    """Every cell of the paper that holds a reported value or a recipe, filtered by prefix."""
    tables = [t for t in paper.tables if t.kind != "architecture" and (t.ablation or not ablation_only)]
    tables = _narrow(table, tables, lambda t: [t.id])
    if table is not None and not tables:
        raise UnknownNameError(f"{paper.key} table", table, [t.id for t in paper.tables])
    cells: list[Cell] = []
    for t in tables:
        rows = _narrow(row, t.rows, lambda r: [r.name, r.plain_name])
        groups = _narrow(dataset, [paper.datasets[g] for g in t.groups],
                         lambda g: [g.key, g.label, g.slug])
        for r in rows:
            for g in groups:
                has_value = any(v is not None for v in r.values.get(g.key, []))
                if has_value or g.key in r.recipes:
                    label = f"{t.id} / {r.name} / {g.key}"
                    pair = next((i for i in paper.inconsistencies if label in i.cells), None)
                    note = f"Paper inconsistency: {pair.note}" if pair else ""
                    cells.append(Cell(paper.key, t, r, g, r.recipes.get(g.key), note))
    if not cells and (row or dataset):
        raise ReidbenchError(f"no cell of {paper.key} matches --table {table or '*'} --row {row or '*'} "
                             f"--dataset {dataset or '*'}",
                             hint=f"see `reidbench reproduce {paper.key} --dry-run` for the cells")
    return cells
