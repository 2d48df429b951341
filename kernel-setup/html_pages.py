"""HTML pages of notebooks whose formulas render offline.

nbconvert's pages load MathJax from a CDN, so without a network every formula stays raw LaTeX.
`write_html(nb, target_path)` exports with nbconvert's HTMLExporter and points it at a MathJax
copy placed next to the page, in `<page folder>/mathjax/`, with a relative URL: the folder keeps
working when it is copied or moved elsewhere, or opened through file://.

The MathJax is 2.7.9 from PyPI's `jupyter-server-mathjax` (pinned in
kernel-setup/requirements.txt). That package ships a reduced MathJax tree: one combined
configuration (TeX-AMS-MML_HTMLorMML-full), the HTML-CSS output with the STIX-Web fonts only
(no CommonHTML output, no TeX or image fonts), so the pages use that configuration, plus
`config/local/sgm.js` (written here) that makes HTML-CSS use the STIX-Web web fonts. Only the
files a page can load are copied (197 files, 2.5 MB), once per folder: a folder that already
holds this copy is left as it is.

Usage from Python: `from html_pages import write_html` (kernel-setup/ on sys.path).
"""
import hashlib
import importlib.util
import os
import pathlib
import re
import shutil
import tempfile

MATHJAX_PACKAGE = "jupyter_server_mathjax"
MATHJAX_DIR = "mathjax"
# Safe: the page's TeX cannot run scripts or load URLs (pages may show students' text).
MATHJAX_URL = f"{MATHJAX_DIR}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/sgm"
# What a page can load from the tree, relative to its root (folders are copied whole).
MATHJAX_FILES = [
    "MathJax.js",
    "LICENSE",
    "config/TeX-AMS-MML_HTMLorMML-full.js",
    "config/Safe.js",
    "extensions",  # on demand: \require{...}, the menu, the zoom; a11y is left out below
    "jax/input",
    "jax/element",
    "jax/output/HTML-CSS",
    "fonts/HTML-CSS/STIX-Web",
    "localization/en",
]
# The accessibility add-ons (3.7 MB) load only when a reader turns them on in MathJax's menu.
MATHJAX_SKIP = {"extensions/a11y"}
LOCAL_CONFIG = """\
/* Written by kernel-setup/html_pages.py: the HTML-CSS output with the STIX-Web web fonts that
   ship in this folder (jupyter-server-mathjax has no TeX or image fonts). */
MathJax.Hub.Config({
  "HTML-CSS": {
    availableFonts: [],
    preferredFont: null,
    webFont: "STIX-Web",
    imageFont: null,
    linebreaks: { automatic: true }
  },
  MMLorHTML: { prefer: "HTML" }
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/sgm.js");
"""
STAMP = ".sgm-mathjax"
# nbconvert's lab page, less the one other thing it always loads from a CDN: require.js, which
# only widgets and application/javascript outputs use (evcxr sends neither). Mermaid diagrams
# still load mermaid from a CDN, and only when a page has one.
PAGE_TEMPLATE = "sgm_offline_page.html.j2"
PAGE_TEMPLATE_TEXT = """\
{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
"""


def mathjax_source():
    """The MathJax tree of the installed jupyter-server-mathjax."""
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"{MATHJAX_PACKAGE} is not installed: run kernel-setup/setup.sh "
            "(it is pinned in kernel-setup/requirements.txt)"
        )
    static = pathlib.Path(spec.submodule_search_locations[0]) / "static"
    if not (static / "MathJax.js").is_file():
        raise RuntimeError(f"{static} has no MathJax.js")
    return static


def _stamp_text(source):
    """What identifies a copy: the MathJax version, the file list and the local config."""
    version = "unknown"
    head = (source / "MathJax.js").read_text(encoding="utf-8", errors="replace")
    marker = 'MathJax.version="'
    if marker in head:
        version = head.split(marker, 1)[1].split('"', 1)[0]
    digest = hashlib.sha256("\n".join(MATHJAX_FILES + sorted(MATHJAX_SKIP) + [LOCAL_CONFIG]).encode()).hexdigest()
    return f"MathJax {version} from {MATHJAX_PACKAGE}; {digest[:16]}\n"


def ensure_mathjax(folder):
    """Places the MathJax copy in `folder/mathjax/` unless the same copy is already there.
    Returns its path. Safe against a concurrent writer: the copy is built aside and renamed."""
    folder = pathlib.Path(folder)
    dest = folder / MATHJAX_DIR
    source = mathjax_source()
    stamp = _stamp_text(source)
    if (dest / STAMP).is_file() and (dest / STAMP).read_text() == stamp:
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".mathjax-", dir=folder))
    try:
        for rel in MATHJAX_FILES:
            src, dst = source / rel, staging / rel
            if src.is_dir():
                shutil.copytree(
                    src,
                    dst,
                    ignore=lambda d, names: [
                        n for n in names if (pathlib.Path(d) / n).relative_to(source).as_posix() in MATHJAX_SKIP
                    ],
                )
            elif src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            else:
                raise RuntimeError(f"{src} is missing from {MATHJAX_PACKAGE}")
        (staging / "config/local").mkdir(parents=True, exist_ok=True)
        (staging / "config/local/sgm.js").write_text(LOCAL_CONFIG, encoding="utf-8")
        (staging / STAMP).write_text(stamp)
        os.chmod(staging, 0o755)
        if dest.exists() or dest.is_symlink():
            # An older or foreign copy: set it aside first (rename is atomic, rmtree is not).
            old = pathlib.Path(tempfile.mkdtemp(prefix=".mathjax-old-", dir=folder))
            try:
                os.replace(dest, old / "mathjax")
            except FileNotFoundError:
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(staging, dest)
        except OSError:
            # Another writer placed its copy between our check and our rename: keep theirs.
            if not ((dest / STAMP).is_file() and (dest / STAMP).read_text() == stamp):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# What a sanitized page keeps of the HTML in markdown and outputs: the tags markdown renders to
# (headings, paragraphs, lists, tables, code, emphasis, links, images) with their classes; no
# ids, scripts, event handlers, styles, frames or forms.
SAFE_TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em", "h1", "h2",
             "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span",
             "strong", "sub", "summary", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul"}


def safe_attribute(tag, name, value):
    """Whether a sanitized page keeps attribute `name` of `tag`: classes, titles, alt texts
    and table spans; links to the web, mail or an anchor; images inlined as data (a page must
    not fetch anything either). Not ids: a student's element could take the id of one the page
    or MathJax looks up (`MathJax_Message`), on a page that shows the whole class's answers."""
    if name in ("class", "title", "alt", "colspan", "rowspan"):
        return True
    if tag == "a" and name == "href":
        return value.startswith(("http://", "https://", "mailto:", "#"))
    if tag == "img" and name == "src":
        return value.startswith("data:image/") and not value.startswith("data:image/svg")
    return False


def clean_html(html):
    """`html` with only SAFE_TAGS and safe_attribute's attributes; anything else is shown as
    text (a `<script>` reads as `&lt;script&gt;`)."""
    import bleach

    html = html.decode() if isinstance(html, bytes) else str(html)
    return bleach.clean(html, tags=SAFE_TAGS, attributes=safe_attribute,
                        protocols=["http", "https", "mailto", "data"])


# An attachment link in markdown, `attachment:NAME`, as far as a URL in markdown goes.
ATTACHMENT_LINK = re.compile(r"attachment:([^\s)\]\"'<>]+)")


def keep_valid_attachments(nb):
    """Markdown cells keep only the attachments nbconvert can embed (a name mapped to a
    non-empty {mime type: base64 text}; a student's notebook may hold anything there), and a
    link to one they do not have (a cell pasted from another notebook) becomes plain text:
    nbconvert would stop the whole page at it."""
    for cell in nb.cells:
        attachments = cell.get("attachments")
        valid = {}
        if isinstance(attachments, dict):
            for name, data in attachments.items():
                if isinstance(data, dict) and data and all(isinstance(k, str) and isinstance(v, str)
                                                           for k, v in data.items()):
                    valid[name] = data
        if attachments is not None:
            cell["attachments"] = valid
        if cell.cell_type == "markdown" and "attachment:" in cell.source:
            cell.source = ATTACHMENT_LINK.sub(
                lambda m: m.group(0) if m.group(1) in valid else f"missing-attachment:{m.group(1)}",
                cell.source)


def drop_attachment_links(nb):
    """Turns every `attachment:` link of the markdown cells into plain text; whether there was
    one (the last resort where nbconvert still fails on one)."""
    found = False
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "attachment:" in cell.source:
            cell.source = cell.source.replace("attachment:", "missing-attachment:")
            found = True
    return found


def write_html(nb, target_path, sanitize=False):
    """Writes notebook `nb` (an nbformat node) as an HTML page at `target_path`, with MathJax
    loaded from `mathjax/` beside it (copied there when missing). With `sanitize` the HTML in
    its markdown and outputs keeps only what clean_html lets through (for pages of notebooks
    nobody trusts, such as students')."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    target = pathlib.Path(target_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ensure_mathjax(target.parent)
    exporter = HTMLExporter(
        extra_loaders=[DictLoader({PAGE_TEMPLATE: PAGE_TEMPLATE_TEXT})],
        template_file=PAGE_TEMPLATE,
        mathjax_url=MATHJAX_URL,
        sanitize_html=sanitize,
    )
    exporter.register_filter("clean_html", clean_html)
    keep_valid_attachments(nb)
    try:
        body, _ = exporter.from_notebook_node(nb)
    except Exception as first:  # nbconvert's InvalidNotebook, among others: a missing attachment
        if not drop_attachment_links(nb):
            raise
        try:
            body, _ = exporter.from_notebook_node(nb)
        except Exception:
            raise first from None
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staging.write_text(body, encoding="utf-8")
    os.replace(staging, target)
    return target
