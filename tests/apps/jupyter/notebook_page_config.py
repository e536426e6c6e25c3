"""Jupyter Server configuration for the end-to-end tests (passed as --config): Notebook 7's page
config.

JupyterLab's pages read `settings/page_config.json5` (--LabApp.app_settings_dir); Notebook 7's
read `disabledExtensions` only from `labconfig/page_config.json` in the Jupyter config path, which
the tests share with every app of the venv. So Notebook's pages are adjusted here, through
jupyterlab_server's `page_config_hook`, and JupyterLab's are left as they are.
"""

# Plugins that log errors in the browser console when Notebook 7.6.5 opens `/tree` or
# `/notebooks/...`, with or without Portico in front and with `base_url` set or not.
NOTEBOOK_DISABLED = [
    # "Cannot read properties of undefined (reading 'schema')", on every page load, also with
    # nothing but Notebook and JupyterLab installed: the keyboard shortcuts plugin listens for
    # other plugins' settings before its own are loaded, and reads its own when one arrives.
    # The tests drive Notebook with its toolbar and menus, not with keyboard shortcuts.
    "@jupyterlab/shortcuts-extension:shortcuts",
    # "Cannot convert undefined or null to object", from the document manager, which finds no
    # `defaultViewers` setting: only with both of these lab extensions of the shared venv (Panel's
    # and Voila's previews, which add document widget factories as the page loads), not with
    # either alone. Neither is used by the Jupyter tests.
    "@pyviz/jupyterlab_pyviz",
    "@voila-dashboards/jupyterlab-preview",
]


def page_config_hook(handler, page_config):
    """Disables NOTEBOOK_DISABLED on Notebook 7's pages."""
    if page_config.get("appName") == "Jupyter Notebook":
        disabled = page_config.setdefault("disabledExtensions", [])
        disabled.extend(name for name in NOTEBOOK_DISABLED if name not in disabled)
    return page_config


c.ServerApp.tornado_settings = {"page_config_hook": page_config_hook}  # noqa: F821
