"""Networks of the bundle. MONAI/PyTorch networks are used as they are; only what no library has lives here."""

from .ensemble import EfficientNetEnsemble, EnsembleNetwork
from .student import ThreeConvStudent

__all__ = ["EfficientNetEnsemble", "EnsembleNetwork", "ThreeConvStudent"]
