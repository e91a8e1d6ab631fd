"""mkdocs hooks: the site's pages are docs/ plus four files at the repository's root, added as
they are, with their links rewritten from repository paths to site paths.

Every page is written to read right where it lies in the repository (on a code host, in an
editor): README.md links to docs/training.md, docs/training.md to ../BENCHMARKS.md#section.
In the site the root files live at the names below, so each relative link is resolved against
its file's place in the repository and, when it points into docs/ or at one of these files,
rewritten to the target's place in the site. Links to anything else are left alone, and strict
mode then reports them: a site page must not link to a file the site does not have.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
# repository path -> site path, for the pages that live outside docs/
ROOT_PAGES = {"README.md": "index.md", "BENCHMARKS.md": "results.md",
              "benchmarks/NOTEBOOK.md": "notebook.md", "data/README.md": "corpora.md"}
SITE_TO_REPOSITORY = {site: repository for repository, site in ROOT_PAGES.items()}
# ](target) of a Markdown link or image; the target has no spaces or parentheses
LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def on_files(files: Files, config) -> Files:
    for repository, site in ROOT_PAGES.items():
        files.append(File.generated(config, site, abs_src_path=str(ROOT / repository)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    source = page.file.src_uri
    repository_path = SITE_TO_REPOSITORY.get(source, f"docs/{source}")
    return LINK.sub(lambda match: match[1] + site_link(match[2], repository_path, source)
                    + match[3], markdown)


def site_link(target: str, repository_path: str, site_path: str) -> str:
    """``target``, a link in the file at ``repository_path``, as a link from ``site_path``."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return target  # a URL, an anchor on the same page, an absolute path
    path, hash_mark, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(repository_path), path))
    if resolved in ROOT_PAGES:
        in_site = ROOT_PAGES[resolved]
    elif resolved.startswith("docs/"):
        in_site = resolved[len("docs/"):]
    else:
        return target
    relative = posixpath.relpath(in_site, posixpath.dirname(site_path) or ".")
    return relative + hash_mark + anchor
