"""The layering holds in both directions: no import cycle anywhere in the three packages.

import-linter (`make lint`) keeps the arrows between packages pointing one way; this test
walks every import inside them too, those made inside functions and under TYPE_CHECKING
included, so a cycle between two modules of one package cannot creep back either.
"""

from __future__ import annotations

import grimp

PACKAGES = ("server", "chunks", "avatars")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    imports = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    state: dict[str, str] = {}
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        path.append(module)
        for imported in imports[module]:
            if state.get(imported) == "open":
                found.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, path)
        path.pop()
        state[module] = "done"

    for module in sorted(imports):
        if module not in state:
            visit(module, [])
    return found


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, exclude_type_checking_imports=False)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
