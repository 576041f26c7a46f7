"""The course website: Sphinx with MyST (myst-nb), built by ``scripts/docs.sh``.

The pages are the Markdown files of this folder (the reference) and the course's notebooks,
one chapter each (``_ext/vpnlab_chapters.py``: copied from ``build/executed/`` where the
notebook tests left them executed; never executed here: ``nb_execution_mode = "off"``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "vpnlab"
author = "the vpnlab course"
copyright = "vpnlab contributors (MIT)"

extensions = ["myst_nb", "vpnlab_chapters"]
nb_execution_mode = "off"  # the notebooks need root and a lab: the tests ran them
nb_merge_streams = True  # one block per cell's stdout, as JupyterLab shows it
myst_heading_anchors = 3  # [text](page.md#a-heading) links to headings down to ###
myst_enable_extensions = ["colon_fence"]

root_doc = "index"
exclude_patterns = ["_build", "_ext", "**/.ipynb_checkpoints"]
html_theme = "sphinx_book_theme"
html_title = "vpnlab: a VPN to take apart"
html_theme_options = {
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": True,
}
html_last_updated_fmt = None
html_show_sourcelink = False
html_static_path = ["_static"]
html_favicon = "_static/vpnlab.svg"
html_context = {"default_mode": "light"}  # the theme's light/dark switch starts from light
