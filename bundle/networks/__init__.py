"""Networks of the bundle. MONAI/PyTorch networks are used as they are; only what no library has lives here."""

from .checks import check_input_size
from .ensemble import EfficientNetEnsemble, EnsembleNetwork
from .heads import HeadLayout
from .profile import count_flops, count_parameters, network_profile
from .student import ThreeConvStudent
from .vit import VIT_SIZES, CXRViT, vit_patch_size

__all__ = ["count_flops", "count_parameters", "network_profile", "check_input_size", "EfficientNetEnsemble", "EnsembleNetwork",
           "ThreeConvStudent", "CXRViT", "HeadLayout", "VIT_SIZES", "vit_patch_size"]
