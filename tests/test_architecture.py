"""The layout rules of ARCHITECTURE.md, checked by reading every module with ``ast``.

* no import cycle between the project's modules;
* imports go downward only: each part of the code has a rank, and a module imports only from
  lower ranks (or from its own part);
* an import inside a function is rare and says why in a comment just above it;
* every kind of run in the kinds table has its module, with a request, an executor and an
  explanation after a restart.

Why not import-linter: these rules are a page of code over ``ast``, and a failure here names
the file, the line and the rule, with no configuration language to learn.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "actions", "state")

#: Rank of each part of the code: a module may import parts of lower rank, and its own part.
#: The first matching prefix wins (longest prefixes first).
RANKS: list[tuple[str, int]] = [
    # the bottom, for every layer: redaction imports nothing; the configuration types and the log filter
    # import only redaction
    ("bot", 0), ("bot.redact", 0), ("bot.config", 1), ("bot.log_redaction", 1),
    ("actions", 2), ("state", 2),
    ("bot.rules", 3),
    ("bot.render", 4),
    ("bot.worker", 5), ("bot.slack_out", 5), ("bot.command_parser", 5),
    ("bot.workflow", 6),
    ("bot.actor", 7), ("bot.scheduler", 7),
    ("bot.runs", 8), ("bot.monitoring", 8),
    ("handlers", 9),
    ("bot.app", 10),  # the wiring: the one bot module that registers the handlers
    ("bot.simulator", 10),  # the Slack stand-in the console and the tests drive the app with
    ("bot.console", 11), ("bot.demo", 11), ("bot.cli", 12), ("bot.__main__", 13),
]
#: Most blocks of in-function imports the code may have (each with its reason in a comment above it).
# 27: bot.cli loads asyncio and bot.config on use (`migrabot lint DIR` start-up, issue 18)
# 30: and logging, traceback and the linter itself, after squawk has started (issue 18 again)
MAX_FUNCTION_IMPORTS = 30


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported project module
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            ids |= {id(n) for n in ast.walk(node)}
    return ids


def _functions_imports(tree: ast.Module) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            ids |= {id(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    return ids


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The project modules ``name`` imports; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip, in_function = _type_checking_nodes(tree), _functions_imports(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                targets.append(sub if sub in modules else node.module)
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append(Import(name, target, node.lineno, id(node) in in_function))
    return found


def all_imports() -> list[Import]:
    modules = project_modules()
    return [imp for name, path in sorted(modules.items()) for imp in imports_of(name, path, modules)]


def rank_of(module: str) -> tuple[str, int]:
    for prefix, rank in sorted(RANKS, key=lambda r: -len(r[0])):
        # "bot" is the package itself (its version): every other bot module needs a rank of its own
        if module == prefix or (prefix != "bot" and module.startswith(prefix + ".")):
            return prefix, rank
    raise AssertionError(f"{module} has no rank in tests/test_architecture.py: give it one (and say so in "
                         "ARCHITECTURE.md)")


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for imp in all_imports():
        edges.setdefault(imp.source, set()).add(imp.target)
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_go_downward_only() -> None:
    upward = []
    for imp in all_imports():
        (part, rank), (target_part, target_rank) = rank_of(imp.source), rank_of(imp.target)
        if part != target_part and target_rank >= rank:
            upward.append(f"{imp.source}:{imp.line} imports {imp.target} ({part} {rank} -> {target_part} "
                          f"{target_rank})")
    assert not upward, "imports that do not go downward:\n" + "\n".join(upward)


def test_the_bottom_imports_only_itself() -> None:
    """What actions/ and state/ may import from bot/ stays a closed bottom layer."""
    bottom = {"bot", "bot.redact", "bot.config"}
    found = [f"{imp.source}:{imp.line} imports {imp.target}" for imp in all_imports()
             if imp.source in bottom and (imp.target not in bottom or imp.source == "bot.redact")]
    assert not found, found
    from_bot = {imp.target for imp in all_imports()
                if imp.source.startswith(("actions", "state")) and imp.target.startswith("bot")}
    assert from_bot <= bottom, from_bot


def _reason_above(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or just above the block of imports it belongs to."""
    if "#" in lines[lineno - 1]:
        return True
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith(("import ", "from ")):
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")


def test_imports_inside_functions_are_few_and_say_why() -> None:
    modules = project_modules()
    unexplained, blocks = [], set()
    for name, path in sorted(modules.items()):
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if not isinstance(inner, ast.Import | ast.ImportFrom):
                    continue
                first = inner.lineno
                while first > 1 and lines[first - 2].strip().startswith(("import ", "from ")):
                    first -= 1
                blocks.add((name, first))
                if not _reason_above(lines, inner.lineno):
                    unexplained.append(f"{name}:{inner.lineno}: {lines[inner.lineno - 1].strip()}")
    assert not unexplained, "imports inside functions without a comment saying why:\n" + "\n".join(unexplained)
    assert len(blocks) <= MAX_FUNCTION_IMPORTS, (
        f"{len(blocks)} blocks of imports inside functions (at most {MAX_FUNCTION_IMPORTS})")


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    """The rules above are only as good as their checks: a made-up cycle and upward import are caught."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
    assert rank_of("state.runs")[1] < rank_of("bot.runs.migrate")[1] < rank_of("handlers.migrate")[1]


def test_every_kind_of_run_has_its_module() -> None:
    from bot.rules.kinds import KINDS
    from bot.runs.registry import EXECUTORS, EXPLAINERS, KIND_MODULES

    assert set(KINDS) == set(KIND_MODULES) == set(EXECUTORS) == set(EXPLAINERS)
    for name, module in KIND_MODULES.items():
        assert module.__name__ == f"bot.runs.{name}", f"kind {name} lives in bot/runs/{name}.py"


def test_the_confirmation_word_is_written_once() -> None:
    """The runbook's RESTORE is a string in actions/restore.py only; everything else uses CONFIRM_WORD."""
    holders = []
    for name, path in project_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.Constant) and n.value == "RESTORE" for n in ast.walk(tree)):
            holders.append(name)
    assert holders == ["actions.restore"], holders


def test_the_map_names_every_module_and_nothing_that_is_gone() -> None:
    """ARCHITECTURE.md is the map: every module is in it, and every module it names exists."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:bot|handlers|actions|state)/[\w/]*\w\.py)`", text))
    every = {p.relative_to(ROOT).as_posix(): p for p in project_modules().values()}
    on_disk = {path for path, p in every.items() if p.name != "__init__.py"}
    assert not sorted(on_disk - named), f"modules ARCHITECTURE.md does not list: {sorted(on_disk - named)}"
    assert not sorted(named - set(every)), f"ARCHITECTURE.md names modules that are gone: {sorted(named - set(every))}"


def test_every_module_says_what_it_is_for() -> None:
    """The map's one line per module is the first sentence of its docstring: each module has one."""
    missing = [name for name, path in project_modules().items()
               if path.name != "__init__.py" and not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))]
    assert not missing, f"modules without a docstring: {missing}"
