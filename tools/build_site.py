"""Build the course website: the executed notebooks, as saved, rendered to static HTML in ``build/site/``.

Usage: python tools/build_site.py            (``make site`` installs the ``site`` extra first)

Nothing is executed: Sphinx with myst-nb (``nb_execution_mode = "off"``, ``docs/site/conf.py``) renders
the outputs each notebook was saved with. The site works offline: MathJax, RequireJS and the ipywidgets
embed manager are served from the site itself. They come from the npm registry at pinned versions,
checked against the registry's SHA-512, and are kept in ``build/site-vendor/`` so later builds need
no network.

Steps:
1. vendor: the three npm packages -> ``build/site-vendor/static/vendor/`` (once);
2. stage: ``build/site-src/`` gets ``docs/site/index.md``, ``README.md`` (the landing page includes its
   course map) and ``notebooks/NN_*.ipynb``, as saved now (notebooks removed since are removed there);
3. ``sphinx-build -E -b html -c docs/site build/site-src build/site`` (its warnings also in
   ``build/site-warnings.log``), then ``build/site/.built``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
SITE = BUILD / "site"
STAGE = BUILD / "site-src"
DOCTREES = BUILD / "site-doctrees"
WARNINGS = BUILD / "site-warnings.log"
VENDOR = BUILD / "site-vendor"
VENDOR_STATIC = VENDOR / "static"  # html_static_path in docs/site/conf.py: copied into build/site/_static/
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"

# name, version, the registry's integrity (sha512), and which files of the package the site serves:
# {path in the tarball (a folder copies whole): path under _static/vendor/}
NPM_PACKAGES = [
    (
        "mathjax",
        "3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        {
            # the combined TeX + MathML -> CommonHTML component, and what it loads on demand:
            # TeX extensions (autoload), the CHTML fonts, the menu and its accessibility parts
            "package/es5/tex-mml-chtml.js": "mathjax/tex-mml-chtml.js",
            "package/es5/input": "mathjax/input",
            "package/es5/output/chtml": "mathjax/output/chtml",
            "package/es5/ui": "mathjax/ui",
            "package/es5/a11y": "mathjax/a11y",
            "package/es5/sre": "mathjax/sre",
            "package/LICENSE": "mathjax/LICENSE",
        },
    ),
    (
        "requirejs",
        "2.3.7",
        "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
        {"package/require.js": "require.js"},
    ),
    (
        # ipywidgets 8's embed manager (widget protocol 2.0, @jupyter-widgets/controls 5); the font files
        # beside it are Font Awesome's, which its CSS loads relative to the script
        "@jupyter-widgets/html-manager",
        "1.0.15",
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        {"package/dist/embed-amd.js": "html-manager/embed-amd.js", "package/LICENSE": "html-manager/LICENSE"},
    ),
]
# Font Awesome's files in html-manager's dist/ (hashed names), copied beside embed-amd.js: the formats
# browsers of this decade pick first (its CSS also lists .eot, .ttf and .svg, which they never request)
HTML_MANAGER_FONTS = (".woff2", ".woff")


def _tarball_name(name: str, version: str) -> str:
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch_tarball(name: str, version: str, integrity: str, cache: Path) -> bytes:
    """The package's tarball from ``cache``, else from the npm registry (``npm pack``, or the tarball URL
    when npm is missing); refused unless its SHA-512 is the pinned one."""
    path = cache / _tarball_name(name, version)
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        npm = shutil.which("npm")
        print(f"site: fetching {name}@{version} from the npm registry" + ("" if npm else " (no npm: by its URL)"))
        if npm:
            env = dict(os.environ, npm_config_cache=str(cache / "npm-cache"), npm_config_update_notifier="false")
            subprocess.run(
                [npm, "pack", f"{name}@{version}", "--pack-destination", str(cache), "--silent"],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
        else:
            base = name.split("/")[-1]
            url = f"https://registry.npmjs.org/{name}/-/{base}-{version}.tgz"
            with urllib.request.urlopen(url, timeout=120) as response:
                data = response.read()
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
    data = path.read_bytes()
    if _integrity(data) != integrity:
        path.unlink()
        raise SystemExit(f"site: {path.name} does not match the pinned sha512 (removed; run again to re-fetch)")
    return data


def vendor_assets() -> None:
    """Unpack the pinned npm packages' files into ``build/site-vendor/static/vendor/`` (once per pin)."""
    pins = "\n".join(f"{name}@{version} {integrity} {files}" for name, version, integrity, files in NPM_PACKAGES)
    pins += f"\nfonts {HTML_MANAGER_FONTS}"
    stamp = VENDOR / "static.pins"
    if stamp.exists() and stamp.read_text() == pins and (VENDOR_STATIC / "vendor").is_dir():
        return
    shutil.rmtree(VENDOR_STATIC, ignore_errors=True)
    shutil.rmtree(SITE / "_static" / "vendor", ignore_errors=True)  # Sphinx adds static files, never removes
    target = VENDOR_STATIC / "vendor"
    for name, version, integrity, files in NPM_PACKAGES:
        data = fetch_tarball(name, version, integrity, VENDOR / "cache")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            for member in members:
                wanted = None
                for source, dest in files.items():
                    if member.name == source or member.name.startswith(source + "/"):
                        wanted = dest + member.name[len(source) :]
                if name == "@jupyter-widgets/html-manager" and member.name.startswith("package/dist/"):
                    if member.name.endswith(HTML_MANAGER_FONTS):
                        wanted = "html-manager/" + Path(member.name).name
                if wanted is None:
                    continue
                out = target / wanted
                if ".." in Path(wanted).parts:
                    raise SystemExit(f"site: refusing {member.name} of {name}: it leaves the vendor folder")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(member).read())
    stamp.write_text(pins)


def _copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, dest)


def stage_sources() -> list[str]:
    """``build/site-src/``: the landing page, the README it includes, the notebooks (stale ones removed)."""
    notebooks = sorted((REPO / "notebooks").glob(NOTEBOOK_GLOB))
    if not notebooks:
        raise SystemExit("site: no notebooks/NN_*.ipynb found")
    _copy(REPO / "docs" / "site" / "index.md", STAGE / "index.md")
    _copy(REPO / "README.md", STAGE / "README.md")
    wanted = {nb.name for nb in notebooks}
    for old in (STAGE / "notebooks").glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for nb in notebooks:
        _copy(nb, STAGE / "notebooks" / nb.name)
    return [nb.name for nb in notebooks]


def build() -> None:
    started = time.perf_counter()
    vendor_assets()
    names = stage_sources()
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-c",
        str(REPO / "docs" / "site"),
        "-d",
        str(DOCTREES),
        "-E",  # every page read afresh (about 20 s): no stale page, and every warning reported
        "-q",  # warnings and errors only, on stderr and in WARNINGS (the site's tests read it)
        "-w",
        str(WARNINGS),
        "-j",
        "auto",
        str(STAGE),
        str(SITE),
    ]
    subprocess.run(command, check=True, cwd=REPO)
    pages = {Path(name).stem + ".html" for name in names}
    for old in (SITE / "notebooks").glob("*.html"):  # a notebook removed or renamed since the last build
        if old.name not in pages:
            old.unlink()
    (SITE / ".built").write_text("\n".join(names) + "\n")
    size = sum(p.stat().st_size for p in SITE.rglob("*") if p.is_file())
    print(
        f"site: {len(names)} notebooks -> {SITE.relative_to(REPO)}/index.html "
        f"({size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    build()
