"""Scene datasets: folders, robust image loading, the dataset registry, splits, synthetic scenes."""

from skyfuse.data.folder import Sample, ScanReport, SceneFolder
from skyfuse.data.images import IMAGE_EXTENSIONS, decode_image, load_image, sha256_file

__all__ = [
    "IMAGE_EXTENSIONS",
    "Sample",
    "ScanReport",
    "SceneFolder",
    "decode_image",
    "load_image",
    "sha256_file",
]
