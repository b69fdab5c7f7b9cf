"""Print what the container image installs, one requirement a line: the project's dependencies
and those of the extras the image ships (`--build-backend` adds the build backend's).

The Containerfile installs these in a layer of their own, before the sources arrive, so that a
change of the code alone does not reinstall every dependency; `scripts/image/build.sh` downloads
the same list into the wheelhouse. Standard library only: it runs on the image's bare Python.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

# The optional parts a deployment needs: the Redis broker (several replicas) and the operator,
# which runs from the same image. The bench and test extras stay out.
IMAGE_EXTRAS = ("redis", "operator")


def image_requirements(pyproject: dict, *, build_backend: bool) -> list[str]:
    project = pyproject["project"]
    requirements = list(project["dependencies"])
    for extra in IMAGE_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    if build_backend:
        requirements += pyproject["build-system"]["requires"]
    return requirements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path, help="the project's pyproject.toml")
    parser.add_argument("--build-backend", action="store_true", help="also the build-system requirements")
    args = parser.parse_args()
    pyproject = tomllib.loads(args.pyproject.read_text())
    print("\n".join(image_requirements(pyproject, build_backend=args.build_backend)))


if __name__ == "__main__":
    main()
