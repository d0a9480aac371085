"""Every machine-readable error code the server can send is documented (docs/errors.md, README.md).

The codes are found in the source, not listed here, so a new code fails this test until it is
documented: a client (and the load-test kit in loadtest/, which refuses undocumented codes)
can only handle what it can read about.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "chunks", "avatars")
# Keyword arguments that carry a code: every error takes `code=`, the profile-image API's
# ValidationFailure also `field_code=` (its `fieldErrors[].code`).
CODE_NAMES = frozenset({"code", "field_code"})
# Calls that take the code as their second positional argument (status, code, message...):
# server/errors.py's Problem and the IETF draft's problem details in server/protocols/ietf_draft.py.
POSITIONAL_CODE_CALLS = frozenset({"Problem", "_problem_json"})


def _strings(node: ast.AST | None, constants: dict[str, str]) -> Iterator[str]:
    """The str constants `node` can evaluate to: a literal, either branch of `a if c else b`, or a
    module-level name bound to a literal (chunks/concatenation.py's PART_GONE)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body, constants)
        yield from _strings(node.orelse, constants)
    elif isinstance(node, ast.Name) and node.id in constants:
        yield constants[node.id]


def _module_constants(tree: ast.Module) -> dict[str, str]:
    found = {}
    for statement in tree.body:
        if not (isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)):
            continue
        if isinstance(statement.value.value, str):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = statement.value.value
    return found


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _assigned(node: ast.AST) -> tuple[list[ast.expr], ast.expr | None]:
    if isinstance(node, ast.Assign):
        return node.targets, node.value
    if isinstance(node, ast.AnnAssign):
        return [node.target], node.value
    return [], None


def _codes_in(node: ast.AST, constants: dict[str, str]) -> Iterator[str]:
    if isinstance(node, ast.keyword) and node.arg in CODE_NAMES:
        yield from _strings(node.value, constants)
    elif isinstance(node, ast.Dict):
        for key, item in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "code":
                yield from _strings(item, constants)
    elif isinstance(node, ast.Call) and _call_name(node) in POSITIONAL_CODE_CALLS and len(node.args) >= 2:
        yield from _strings(node.args[1], constants)
    elif isinstance(node, ast.arguments):
        # Defaults of parameters named `code` (AuthError's "unauthenticated", FetchesBusy's...).
        positional = [*node.posonlyargs, *node.args]
        pairs = [*zip(positional[len(positional) - len(node.defaults) :], node.defaults, strict=True)]
        pairs += [(arg, default) for arg, default in zip(node.kwonlyargs, node.kw_defaults, strict=True) if default]
        for arg, default in pairs:
            if arg.arg in CODE_NAMES:
                yield from _strings(default, constants)
    else:
        targets, value = _assigned(node)
        for target in targets:
            # Class-level `code = "..."` defaults, and a local `code` picked before it is sent.
            if isinstance(target, ast.Name) and target.id in CODE_NAMES:
                yield from _strings(value, constants)
            # A URL import's recorded failure: `failure = (code, message)` in profile_image_api.py.
            elif isinstance(target, ast.Name) and target.id == "failure" and isinstance(value, ast.Tuple):
                yield from _strings(value.elts[0], constants)


def codes_in_source() -> dict[str, list[str]]:
    """Each code literal in the server's packages, with where it occurs (path:line)."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            constants = _module_constants(tree)
            for node in ast.walk(tree):
                # "" is no code: it is the "none" default of ValidationFailure's field_code.
                for code in filter(None, _codes_in(node, constants)):
                    where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
                    found.setdefault(code, []).append(where)
    return found


def documentation() -> str:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in paths)


def test_the_extraction_finds_codes_of_every_kind() -> None:
    # Guards the test itself: each pattern must still find what it was written for.
    codes = codes_in_source()
    expected = {
        "upload-not-found",  # class attribute (chunks/errors.py)
        "missing-offset",  # keyword argument (server/protocols/tus.py)
        "rate-limited",  # dict literal (server/ratelimit.py)
        "unauthenticated",  # parameter default (server/auth.py)
        "field-missing",  # field_code= (server/protocols/profile_image_api.py)
        "invalid-file-format",  # local `code = a if c else b` (profile_image_api.py)
        "interrupted",  # `failure = (code, message)` (profile_image_api.py)
        "internal-error",  # Problem(500, code, ...) (server/errors.py)
        "mismatching-upload-offset",  # _problem_json(409, code, ...) (ietf_draft.py)
        "partial-upload-gone",  # module constant used as a default (chunks/concatenation.py)
    }
    assert expected <= codes.keys(), expected - codes.keys()
    assert len(codes) >= 100


def test_every_error_code_is_documented() -> None:
    docs = documentation()
    missing = {code: where for code, where in codes_in_source().items() if f"`{code}`" not in docs}
    assert not missing, "error codes documented nowhere (add them to docs/errors.md): " + ", ".join(
        f"{code} ({', '.join(where)})" for code, where in sorted(missing.items())
    )
