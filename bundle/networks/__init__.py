"""Networks of the bundle. MONAI/PyTorch networks are used as they are; only what no library has lives here."""

from .checks import check_input_size
from .densenet import DenseNet161
from .ensemble import EfficientNetEnsemble, EnsembleNetwork
from .heads import HeadLayout
from .hooks import hookless_copy, without_forward_hooks
from .mobilenet import MobileNetV3
from .pretrained import InitReport, load_initial_weights, read_weights
from .profile import count_flops, count_parameters, network_profile
from .registry import NETWORKS, NetworkEntry, build_network, profile_networks, profile_table, register_network
from .student import ThreeConvStudent
from .vit import VIT_SIZES, CXRViT, vit_patch_size

__all__ = ["hookless_copy", "without_forward_hooks", "count_flops", "count_parameters", "network_profile", "check_input_size", "DenseNet161",
           "EfficientNetEnsemble", "EnsembleNetwork", "MobileNetV3", "ThreeConvStudent", "NETWORKS", "NetworkEntry",
           "build_network", "profile_networks", "profile_table", "register_network", "CXRViT", "HeadLayout",
           "VIT_SIZES", "vit_patch_size", "InitReport", "load_initial_weights", "read_weights"]
