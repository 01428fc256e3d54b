"""Loading weights saved under a former submodule name."""

from __future__ import annotations

__all__ = ["rename_state_keys"]


def rename_state_keys(state: dict, prefix: str, renamed: dict[str, str]) -> dict:
    """Rename, in place, the keys of ``state`` under ``prefix + old`` to ``prefix + new``
    for each ``old -> new`` of ``renamed`` (e.g. ``{"lam.": "strength."}``); returns
    ``state``. A key whose new name is also present is left as is, so that loading
    reports it as unexpected instead of choosing one of the two."""
    for old, new in renamed.items():
        for key in [k for k in state if k.startswith(prefix + old)]:
            target = prefix + new + key[len(prefix + old):]
            if target not in state:
                state[target] = state.pop(key)
    return state
