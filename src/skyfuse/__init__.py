"""skyfuse: remote sensing scene classification with VLM captions and dual cross-attention fusion."""

from skyfuse.errors import SkyfuseError

__version__ = "0.1.0"

__all__ = ["SkyfuseError", "__version__"]
