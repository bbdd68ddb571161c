"""Maps the repository's top-level folders onto the ``octa_tui`` namespace.

``protocol/`` installs as ``octa_tui.protocol`` and so on, with every sub-package found
below each folder, so the code never collides with other packages in a training
environment. Works for ``pip install .`` and ``pip install -e .``.
"""

from setuptools import find_packages, setup

FOLDERS = ("protocol", "diagnosis", "trainer", "tui")

packages = ["octa_tui"]
package_dir = {"octa_tui": "octa_tui"}
for folder in FOLDERS:
    packages.append(f"octa_tui.{folder}")
    package_dir[f"octa_tui.{folder}"] = folder
    for sub in find_packages(folder):
        packages.append(f"octa_tui.{folder}.{sub}")
        package_dir[f"octa_tui.{folder}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
