"""Networks of the bundle. MONAI/PyTorch networks are used as they are; only what no library has lives here."""

from .checks import check_input_size
from .ensemble import EfficientNetEnsemble, EnsembleNetwork
from .student import ThreeConvStudent

__all__ = ["check_input_size", "EfficientNetEnsemble", "EnsembleNetwork", "ThreeConvStudent"]
