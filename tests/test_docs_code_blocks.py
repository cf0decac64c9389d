"""Every ```python block of the README and of the pages in docs/ runs as written.

A page's blocks run in order in one namespace (a later block may use the names an earlier one
defined), a fresh one per page, with the working directory in a temporary folder of the page's
own. Each block is a test of its own, named ``page:line`` (the line of its opening fence), so a
failure says which block it is; running one block alone (``-k 'mixture.md:13'``) runs the
page's earlier blocks first.

Two HTML comments, on the line directly above a block's opening fence (blank lines between are
allowed), change how it runs; both are invisible on GitHub and in the Sphinx pages:

- ``<!-- not run: REASON -->``: the block is deliberately not runnable (it needs a CUDA GPU, or
  a file only the user has); the test skips it with that reason, which must be given.
- ``<!-- requires: dask, distributed -->``: the block needs optional packages; the test skips
  it, naming the missing one, where any of them is not installed (the test extra has them, so
  CI runs it).

Shell commands are ```bash blocks and are not run here; neither are blocks without a language
or in another one.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# The languages of the blocks that run (the info string's first word).
PYTHON = {"python", "py", "python3"}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
# myst-parser's code directives, written as fences: ```{code-block} python
_MYST_CODE = {"{code-block}", "{code}", "{sourcecode}"}
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not run|requires)\s*:(?P<text>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    not_run: str | None = None  # the reason, for a block marked <!-- not run: ... -->
    requires: tuple[str, ...] = ()  # the modules of <!-- requires: ... -->

    @property
    def where(self):
        return f"{_relative(self.page)}:{self.line}"


def _relative(path):
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def extract_blocks(text, page=Path("<text>")):
    """The fenced code blocks of Markdown ``text``, with the markers written above them.

    Fences follow CommonMark: three or more backticks or tildes, indented by at most three
    spaces, closed by a fence of the same character at least as long; the block's lines lose
    the opening fence's indentation. An unclosed fence runs to the end of the page.
    """
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        words = opening["info"].split()
        if words and words[0] in _MYST_CODE and len(words) > 1:
            words = words[1:]  # ```{code-block} python: myst's directive, its language next
        language = words[0].lower() if words else ""
        body = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            line = lines[j]
            strip = min(indent, len(line) - len(line.lstrip(" ")))
            body.append(line[strip:])
            j += 1
        not_run, requires = _markers(lines, i, page)
        blocks.append(Block(page, i + 1, language, "\n".join(body) + "\n", not_run, requires))
        i = j + 1
    return blocks


def _markers(lines, fence_index, page):
    """The marker comment on the nearest non-blank line above the fence at ``fence_index``."""
    k = fence_index - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    if k < 0:
        return None, ()
    marker = _MARKER.match(lines[k])
    if marker is None:
        return None, ()
    text = marker["text"].strip()
    where = f"{_relative(page)}:{k + 1}"
    if marker["kind"] == "not run":
        if not text:
            raise ValueError(f"{where}: '<!-- not run: REASON -->' needs a reason; got none.")
        return text, ()
    modules = tuple(name.strip() for name in text.split(",") if name.strip())
    if not modules:
        raise ValueError(f"{where}: '<!-- requires: MODULE, ... -->' names no module.")
    return None, modules


def pages():
    """README.md and every Markdown page of docs/ (guide/ included; not the build's output)."""
    found = [ROOT / "README.md"]
    for path in sorted(DOCS.rglob("*.md")):
        parts = path.relative_to(DOCS).parts
        if any(part.startswith(("_", ".")) or part == "auto_examples" for part in parts[:-1]):
            continue
        found.append(path)
    return found


def python_blocks():
    return [
        block
        for page in pages()
        for block in extract_blocks(page.read_text(encoding="utf-8"), page)
        if block.language in PYTHON
    ]


BLOCKS = python_blocks()


class _Page:
    """One page's namespace and how far its blocks have run."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.namespace = {"__name__": "__main__"}
        self.done = 0  # blocks of the page run (or skipped) so far
        self.failed = []  # where the blocks that failed are


_PAGES: dict[Path, _Page] = {}


def _run(block, page_state, monkeypatch):
    monkeypatch.chdir(page_state.workdir)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the block's lines keep their line numbers in the page, so a traceback points into it
    source = "\n" * block.line + block.code
    try:
        code = compile(source, str(block.page), "exec")
        exec(code, page_state.namespace)
    except Exception:
        page_state.failed.append(block.where)
        raise
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close("all")


def _requirements_missing(block):
    for module in block.requires:
        try:
            __import__(module)
        except ImportError as exc:
            return f"{block.where} needs the optional package {module!r}: {exc}"
    return None


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_code_block_runs(block, tmp_path_factory, monkeypatch):
    page = _PAGES.get(block.page)
    if page is None:
        name = re.sub(r"\W+", "_", _relative(block.page))
        page = _PAGES[block.page] = _Page(tmp_path_factory.mktemp(name))
    blocks = [each for each in BLOCKS if each.page == block.page]
    index = blocks.index(block)
    # the page's earlier blocks first: they have run already, unless this block was selected
    # alone (-k); their errors are reported by their own tests
    while page.done < index:
        earlier = blocks[page.done]
        page.done += 1
        if earlier.not_run is None and _requirements_missing(earlier) is None:
            try:
                _run(earlier, page, monkeypatch)
            except Exception:  # noqa: BLE001 -- its own test reports it; noted below if needed
                pass
    page.done = index + 1
    if block.not_run is not None:
        pytest.skip(f"{block.where}: {block.not_run}")
    missing = _requirements_missing(block)
    if missing is not None:
        pytest.skip(missing)
    earlier_failures = list(page.failed)
    try:
        _run(block, page, monkeypatch)
    except Exception as exc:
        if not earlier_failures:
            raise
        raise AssertionError(
            f"{block.where} raised {type(exc).__name__}: {exc}; earlier blocks of the page "
            f"failed too ({', '.join(earlier_failures)}), and this one may use what they define."
        ) from exc


def test_blocks_are_found():
    """The extraction finds the README's example; a broken extractor would run nothing."""
    readme = [block for block in BLOCKS if block.page == ROOT / "README.md"]
    assert readme, "no ```python block found in README.md"
    assert "import caproute as cr" in readme[0].code
    assert len({block.page for block in BLOCKS}) >= 4


def test_extract_blocks_reads_fences_and_markers():
    text = "\n".join(
        [
            "# A page",  # 1
            "",
            "```python",  # 3
            "a = 1",
            "```",
            "",
            "<!-- not run: needs a CUDA GPU -->",  # 7
            "```python",  # 8
            "import cupy",
            "```",
            "<!-- requires: dask, distributed -->",  # 11
            "",
            "~~~~ py title",  # 13
            "```python",
            "b = a",
            "~~~~",
            "1. a list item",
            "",
            "   ```python",  # 19
            "   c = 3",
            "       d = 4",
            "   ```",
            "```bash",  # 23
            "caproute demo",
            "```",
            "```{code-block} python",  # 26
            "f = 6",
            "```",
            "````python",  # 29: unclosed, runs to the end
            "e = 5",
        ]
    )
    blocks = extract_blocks(text)
    assert [(b.line, b.language) for b in blocks] == [
        (3, "python"),
        (8, "python"),
        (13, "py"),
        (19, "python"),
        (23, "bash"),
        (26, "python"),
        (29, "python"),
    ]
    first, gpu, dask, listed, shell, directive, unclosed = blocks
    assert first.code == "a = 1\n"
    assert (first.not_run, first.requires) == (None, ())
    assert gpu.not_run == "needs a CUDA GPU"
    assert dask.requires == ("dask", "distributed")
    assert dask.code == "```python\nb = a\n"  # a shorter or different fence does not close it
    assert listed.code == "c = 3\n    d = 4\n"
    assert shell.code == "caproute demo\n"
    assert directive.code == "f = 6\n"
    assert unclosed.code == "e = 5\n"


def test_not_run_marker_needs_a_reason():
    with pytest.raises(ValueError, match=r"<text>:1: '<!-- not run: REASON -->' needs a reason"):
        extract_blocks("<!-- not run: -->\n```python\npass\n```")


def test_requires_marker_needs_a_module():
    with pytest.raises(ValueError, match=r"<text>:1: '<!-- requires: MODULE, ... -->' names no"):
        extract_blocks("<!-- requires: , -->\n```python\npass\n```")
