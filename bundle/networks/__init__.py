"""Networks of the bundle. MONAI/PyTorch networks are used as they are; only what no library has lives here."""

from .student import ThreeConvStudent

__all__ = ["ThreeConvStudent"]
