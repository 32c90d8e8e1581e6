"""Scene datasets: folders, robust image loading, the dataset registry, splits, synthetic scenes."""

from skyfuse.data.folder import Sample, ScanReport, SceneFolder
from skyfuse.data.images import IMAGE_EXTENSIONS, decode_image, load_image, sha256_file
from skyfuse.data.synthetic import SYNTHETIC_CLASSES, is_synthetic, make_synthetic_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_CLASSES",
    "Sample",
    "ScanReport",
    "SceneFolder",
    "decode_image",
    "is_synthetic",
    "load_image",
    "make_synthetic_dataset",
    "sha256_file",
]
