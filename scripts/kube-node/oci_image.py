"""Write a one-layer OCI image archive from a few files, for `ctr images import`.

    python3 oci_image.py OUT.tar NAME ENTRYPOINT SOURCE=PATH_IN_IMAGE...

An OCI image archive is a tar of `oci-layout`, `index.json` and content-addressed blobs (the
layer tar, the image config, the manifest). The images the cluster tests need are single static
binaries, so this is all it takes: no container engine, no registry. The archive is
byte-for-byte reproducible (fixed times and owners), so its digest changes only with its files.

Standard library only: it runs under the system python3 before the test environment exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

# Files in the image are owned by this user, and its processes run as it unless a pod says
# otherwise: the convention of the official pause image (65535 is "nobody" nowhere, so it owns
# nothing on the host either).
IMAGE_USER = "65535:65535"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _tar_entry(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    archive.addfile(info, io.BytesIO(data))


def _layer(files: dict[str, Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for name, source in sorted(files.items()):
            _tar_entry(layer, name.lstrip("/"), source.read_bytes(), 0o755)
    return buffer.getvalue()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)}


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def write_image(out: Path, name: str, entrypoint: list[str], files: dict[str, Path]) -> None:
    layer = _layer(files)
    config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": IMAGE_USER},
            "rootfs": {"type": "layers", "diff_ids": [_descriptor(OCI_LAYER, layer)["digest"]]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER, layer)],
        }
    )
    tag = name.rsplit(":", 1)[1]
    index = _json(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    **_descriptor(OCI_MANIFEST, manifest),
                    # containerd names the imported image after the first; the second is the
                    # OCI layout's own tag.
                    "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
                }
            ],
        }
    )
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _tar_entry(archive, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}), 0o644)
        _tar_entry(archive, "index.json", index, 0o644)
        for blob in (layer, config, manifest):
            _tar_entry(archive, f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob, 0o644)
    partial.replace(out)


def main(argv: list[str]) -> None:
    if len(argv) < 4:
        sys.exit(__doc__)
    out, name, entrypoint, *file_args = argv
    files = {}
    for pair in file_args:
        source, _, target = pair.partition("=")
        files[target] = Path(source)
    write_image(Path(out), name, [entrypoint], files)


if __name__ == "__main__":
    main(sys.argv[1:])
