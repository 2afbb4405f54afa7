"""A site to read the course on: every executed lesson, the start page, the glossary, the papers, the facilitator
guide and the workshop pages, as static HTML with a sidebar and search, built offline.

The lessons come from ``solutions/`` as executed (their outputs, pictures and static previews); nothing is run.
Sphinx with MyST-NB builds the site; before it does, this module lays the pages out in ``build/site/source/`` as
they sit in the repository (``notebooks/`` for the lessons and the start page, ``docs/`` for the rest), so that
every relative link between them resolves as it does in JupyterLab, and prepares each lesson for a page that no
kernel runs:

* a widget explorer shows its static preview (a page has no kernel to draw the live one);
* a plotly figure shows its static picture (the page stays light and needs no plotly.js);
* a progress bar's output is dropped (without a kernel it would read "0%" for ever);
* the validator's marks are left out of the code;
* the setup cell's code is folded away (its output, what the lesson ran on, stays);
* an equation is drawn by matplotlib (MathJax would have to come from a network);
* the start page's lesson graph, drawn by JupyterLab from Mermaid, becomes a pointer to the lesson table below
  it, which lists every prerequisite (Mermaid would have to be fetched from a network);
* a link to a folder goes to the folder's README where it has one.

    python -m utils.course.site        # (make site) write build/site/html/, open build/site/html/index.html
    python -m utils.course.site --repository https://github.com/<owner>/<name>   # with "Open in Colab" buttons
"""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import nbformat

from utils.course.notebooks import read_notebook
from utils.paths import NOTEBOOKS, ROOT, SOLUTIONS, shown

SITE = ROOT / "build" / "site"
SOURCE = SITE / "source"
HTML = SITE / "html"
TITLE = "Hands-On Mechanistic Interpretability"

# The pages besides the lessons, as they sit in the repository (relative to it).
DOCS = (
    "docs/glossary.md",
    "docs/papers.md",
    "docs/real-model.md",
    "docs/workshop.md",
    "docs/teaching-on-colab.md",
    "docs/facilitator",
    "docs/questions",
    "docs/figures",
)

VALIDATION_MARK = "# NBVAL_CHECK_OUTPUT"  # the validator's mark, of no use to a reader
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PLOTLY = "application/vnd.plotly.v1+json"
MERMAID = re.compile(r"```mermaid\n.*?```\n", re.S)
DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
LINK = re.compile(r"(\[[^\]]*\])\(([^)\s]+)\)")

CONF = f'''\
# Written by utils/course/site.py on every build; edit that module, not this file.
project = "{TITLE}"
author = "the course's authors"
extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "sphinx_book_theme"
html_title = "{TITLE}"
html_theme_options = {{
    "show_toc_level": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
}}
html_last_updated_fmt = None
nb_execution_mode = "off"  # the lessons are committed executed; the site shows what they printed
myst_heading_anchors = 4  # the lessons link glossary entries by their headings' anchors
myst_enable_extensions = ["colon_fence"]  # no dollarmath: equations arrive drawn (MathJax needs a network)
html_context = {{"default_mode": "light"}}
html_favicon = "_static/favicon.svg"
html_static_path = ["_static"]
html_css_files = ["course.css"]
suppress_warnings = ["mystnb.unknown_mime_type"]
'''

# The tab's icon: an attention pattern's lower triangle, in the course's blue.
FAVICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">
<path d="M1 1h3v3H1zM1 5h3v3H1zM5 5h3v3H5zM1 9h3v3H1zM5 9h3v3H5zM9 9h3v3H9zM1 13h3v2H1zM9 13h3v2H9zM13 13h2v2h-2z"
fill="#1f77b4"/></svg>
"""
CSS = """.course-math { text-align: center; }
.course-math img { max-width: 100%; }
"""


def _lesson_for_a_page(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The executed lesson, with each output a page without a kernel can show (see the module's docstring)."""
    nb.metadata.pop("widgets", None)
    setup = next(cell for cell in nb.cells if cell.cell_type == "code")
    setup.metadata.setdefault("tags", []).append("hide-input")  # the setup cell: a page has nothing to set up
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.source = "\n".join(line for line in cell.source.splitlines() if line.strip() != VALIDATION_MARK)
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data and "text/html" not in data:
                continue  # a progress bar: its last state lived in the kernel's widgets
            data.pop(WIDGET_VIEW, None)
            data.pop(PLOTLY, None)
            kept.append(output)
        cell.outputs = kept
    return nb


def _inline(text: str) -> str:
    """A link's Markdown text as HTML (code spans and emphasis, the only markup link texts here use)."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", re.sub(r"(?<!\*)\*([^*]+)\*(?!\*)", r"<em>\1</em>", text))


def _page_text(text: str, staged: Path) -> str:
    """A page's Markdown as the site shows it (``staged``: where the page lies in the staged tree).

    Mermaid becomes a pointer to the lesson table; a link into ``solutions/`` goes to the lesson's page; a link to
    a folder goes to the folder's README, or becomes plain text where the site has none; a link to a glossary
    entry becomes an HTML link, because the glossary marks its entries with HTML anchors, which Sphinx cannot
    see as targets (the browser test follows one)."""
    text = MERMAID.sub(
        "*The lessons' graph is drawn here when the page is opened in JupyterLab; the table below gives each "
        "lesson's prerequisites.*\n",
        text,
    )

    def link(match: re.Match) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        target = re.sub(r"(^|/)solutions/", r"\1notebooks/", target)
        path, _, anchor = target.partition("#")
        if path.endswith("/"):
            if not (staged.parent / path / "README.md").is_file():
                return label[1:-1]
            path += "README.md"
        if anchor and Path(path).name == "glossary.md":
            return f'<a href="{path[: -len(".md")]}.html#{anchor}">{_inline(label[1:-1])}</a>'
        return f"{label}({path}{'#' + anchor if anchor else ''})"

    return DISPLAY_MATH.sub(lambda m: _math_image(m.group(1), staged), LINK.sub(link, text))


# TeX that matplotlib's mathtext does not know, and its equivalent there.
MATHTEXT = {r"\text{": r"\mathrm{", r"\lVert": r"\Vert", r"\rVert": r"\Vert"}


def _math_image(tex: str, staged: Path) -> str:
    """A displayed equation as an inline SVG drawn by matplotlib's mathtext: the site loads no MathJax, which
    would have to come from a network."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    drawn = tex.strip().replace("\n", " ")
    for command, known in MATHTEXT.items():
        drawn = drawn.replace(command, known)
    fig = plt.figure(figsize=(0.01, 0.01))
    fig.text(0, 0, f"${drawn}$", fontsize=15)
    buffer = io.BytesIO()
    try:
        fig.savefig(
            buffer, format="svg", bbox_inches="tight", pad_inches=0.05, transparent=True, metadata={"Date": None}
        )
    except ValueError as error:
        raise ValueError(f"{shown(staged)}: matplotlib cannot draw the equation {tex.strip()!r} ({error})") from None
    finally:
        plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    alt = html.escape(" ".join(tex.split()), quote=True)
    return f'<p class="course-math"><img alt="{alt}" src="data:image/svg+xml;base64,{data}"></p>'


def published_links(text: str, page: str, site_url: str) -> str:
    """``text`` (Markdown of the repository's page ``page``, e.g. ``"notebooks/01_x.ipynb"``) with every relative
    link pointing at that page on the site published at ``site_url``: a notebook handed out on Colab has no
    folder around it, so its links to the glossary, the start page and the next lesson must be whole addresses."""
    base = site_url.rstrip("/") + "/"
    here = PurePosixPath(page).parent

    def link(match: re.Match) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        parts: list[str] = []
        for part in (here / path).parts:
            if part == "..":
                if parts:
                    parts.pop()
            elif part != ".":
                parts.append(part)
        where = "/".join(parts)
        where = re.sub(r"^solutions(/|$)", r"notebooks\1", where)  # the site shows the lessons as executed
        if path.endswith("/") or not where:  # a folder: its README page (the site writes one for each folder)
            where = f"{where}/README" if where else "index"
        else:
            where = re.sub(r"\.(md|ipynb)$", "", where)
        return f"{label}({base}{where}.html{'#' + anchor if anchor else ''})"

    return LINK.sub(link, text)


def _list_page(title: str, intro: str, entries: list[tuple[str, str]]) -> str:
    lines = [f"# {title}", "", intro, ""] + [f"- [{text}]({target})" for text, target in entries]
    return "\n".join(lines) + "\n"


def _index(lessons: list[Path]) -> str:
    names = "\n".join(f"notebooks/{p.stem}" for p in lessons)
    docs = "\n".join(
        ["docs/glossary", "docs/papers", "docs/real-model"]
        + ["docs/workshop", "docs/teaching-on-colab", "docs/facilitator/README"]
    )
    return f"""# {TITLE}

A hands-on course in mechanistic interpretability: lessons you run on a CPU in about a minute each, on small
models trained on a generated corpus whose every variable is known, so that each method can be checked
against the truth. This site shows every lesson as executed, with its outputs and pictures; to run them, and
to do the exercises, clone the course and run `make course`, then `make lab` (or open a lesson on Colab).

Start with [the start page](notebooks/README.md): its tracks say which lessons to take in which order.

```{{toctree}}
:caption: Start
:maxdepth: 1

notebooks/README
```

```{{toctree}}
:caption: Lessons
:maxdepth: 1

{names}
```

```{{toctree}}
:caption: Reference and teaching
:maxdepth: 1

{docs}
docs/questions/README
docs/figures/README
```
"""


def repository_settings(repository: str, branch: str = "main") -> str:
    """conf.py's lines for a site whose lessons each get an "Open in Colab" button: Colab opens the lesson's exercise
    notebook (``notebooks/NN_....ipynb``) from ``repository`` (a GitHub address) at ``branch``."""
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository.rstrip("/")):
        raise ValueError(
            f"--repository {repository!r}: Colab opens notebooks from GitHub; give https://github.com/<owner>/<name>"
        )
    return (
        f"\nhtml_theme_options.update(repository_url={repository.rstrip('/')!r}, repository_branch={branch!r}, "
        'path_to_docs="", use_repository_button=True, launch_buttons={"colab_url": "https://colab.research.google.com"})\n'
    )


def stage(source: Path = SOURCE, repository: str | None = None, branch: str = "main") -> Path:
    """Lay the site's pages out in ``source`` (emptied first): the lessons, the start page, the docs, a conf.py
    (with "Open in Colab" buttons when ``repository`` names where the course is published on GitHub)."""
    if source.exists():
        shutil.rmtree(source)
    (source / "notebooks").mkdir(parents=True)
    shutil.copyfile(NOTEBOOKS / "README.md", source / "notebooks" / "README.md")
    for name in DOCS:
        origin = ROOT / name
        for file in sorted(origin.rglob("*")) if origin.is_dir() else [origin]:
            if file.is_file():
                (source / file.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, source / file.relative_to(ROOT))
    questions = sorted((source / "docs" / "questions").glob("*.md"))
    (source / "docs" / "questions" / "README.md").write_text(
        _list_page(
            "Discussion questions, by lesson",
            "Each lesson's questions on one page, to print or project.",
            [(_first_heading(p), p.name) for p in questions],
        ),
        "utf-8",
    )
    figures = sorted((source / "docs" / "figures").glob("*/README.md"))
    (source / "docs" / "figures" / "README.md").write_text(
        _list_page(
            "Figures to project, by lesson",
            "Each lesson's mechanism diagrams and static pictures, as files, on one page per lesson.",
            [(_first_heading(p), f"{p.parent.name}/README.md") for p in figures],
        ),
        "utf-8",
    )
    # Each lesson's facilitator notes, questions and figures sit under their folder's page in the sidebar.
    for folder, pages in (("facilitator", "[0-9A-Z][0-9]"), ("questions", "[0-9A-Z][0-9]"), ("figures", "*/README")):
        with (source / "docs" / folder / "README.md").open("a", encoding="utf-8") as readme:
            readme.write(f"\n```{{toctree}}\n:hidden:\n:glob:\n\n{pages}\n```\n")
    for page in sorted(source.rglob("*.md")):
        page.write_text(_page_text(page.read_text(encoding="utf-8"), page), "utf-8")
    # The lessons last: their links to a folder check the staged folder for its README.
    lessons = sorted(SOLUTIONS.glob("[0-9A-Z][0-9]_*.ipynb"))
    for path in lessons:
        staged = source / "notebooks" / path.name
        nb = _lesson_for_a_page(read_notebook(path))
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = _page_text(cell.source, staged)
        nbformat.write(nb, staged)
    (source / "index.md").write_text(_index(lessons), "utf-8")
    (source / "_static").mkdir()
    (source / "_static" / "favicon.svg").write_text(FAVICON, "utf-8")
    (source / "_static" / "course.css").write_text(CSS, "utf-8")
    (source / "conf.py").write_text(CONF + (repository_settings(repository, branch) if repository else ""), "utf-8")
    return source


def _first_heading(page: Path) -> str:
    return next(line[2:].strip() for line in page.read_text(encoding="utf-8").splitlines() if line.startswith("# "))


def build(html: Path = HTML, *, quiet: bool = True, repository: str | None = None, branch: str = "main") -> Path:
    """Stage the pages beside ``html`` (in ``source/``) and build the site into ``html``; returns
    ``html/index.html``. Raises with Sphinx's warnings when a page or a link is broken (a warning is an error here).
    ``repository`` (a GitHub address) gives every lesson page an "Open in Colab" button for its exercise notebook."""
    source = stage(html.parent / "source", repository, branch)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-j", "1", str(source), str(html)]
    if quiet:
        command.insert(3, "-q")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the site did not build ({shown(html)}):\n{done.stderr.strip() or done.stdout.strip()}")
    return html / "index.html"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m utils.course.site", description=__doc__.splitlines()[0])
    parser.add_argument("--repository", help="where the course is published on GitHub: adds 'Open in Colab' buttons")
    parser.add_argument("--branch", default="main", help="the branch or tag those buttons open (default: main)")
    args = parser.parse_args(argv)
    try:
        index = build(repository=args.repository, branch=args.branch)
    except ValueError as error:
        print(f"site: {error}", file=sys.stderr)
        return 1
    print(f"site: {shown(index)} (open it in a browser; the search box works offline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
