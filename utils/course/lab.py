"""The course's JupyterLab server: what ``make setup`` configures beside JupyterLab's own settings.

JupyterLab saves each notebook's widget state (``scripts/jupyterlab-overrides.json``), so that a notebook reopened
without its kernel draws its explorers from the saved state instead of "Error displaying widget: model not found".
Saving it adds a ``widgets`` entry to the notebook's metadata even where no widget was ever shown; the server drops
that empty entry before it writes the file (``make setup`` names the hook below in the server's settings), so that
opening an exercise notebook and letting it autosave changes no byte of it.

Imported by the server when it starts: keep it to the standard library.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def drop_empty_widget_state(model: dict, **_) -> None:
    """A server pre-save hook: remove a notebook's ``widgets`` metadata when it holds no widget's state."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    metadata = model["content"].get("metadata", {})
    widgets = metadata.get("widgets")
    if isinstance(widgets, dict) and not (widgets.get(WIDGET_STATE) or {}).get("state"):
        del metadata["widgets"]


HOOK = "utils.course.lab.drop_empty_widget_state"


def install(prefix: str | None = None) -> Path:
    """Name the hook in the environment's ``etc/jupyter/jupyter_server_config.json`` (the server reads its own
    settings from that file, not from the ``.d`` folder beside it), keeping whatever else the file holds."""
    config = Path(prefix or sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.json"
    settings = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    settings.setdefault("ContentsManager", {})["pre_save_hook"] = HOOK
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return config


if __name__ == "__main__":
    print(f"setup: the server drops empty widget state before saving ({install()})")
