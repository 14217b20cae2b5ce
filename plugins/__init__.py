"""DoLL's built-in plugins, installed under the import name ``doll_plugins``.

They are registered through entry points in ``pyproject.toml`` exactly as a third-party
package registers its own; nothing in ``doll_core`` imports them by name.
"""
