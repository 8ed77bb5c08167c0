"""Public layers of keras_mtl."""

from keras_mtl.layers.activation import Activation
from keras_mtl.layers.add_bias import AddBias
from keras_mtl.layers.agru import AGRUCell
from keras_mtl.layers.agru import (
    dynamic_rnn_with_attention as dynamic_rnn_with_attention,
)
from keras_mtl.layers.agru import static_rnn_with_attention as static_rnn_with_attention
from keras_mtl.layers.allint import AllInt
from keras_mtl.layers.autoint import AutoInt
from keras_mtl.layers.can import CAN
from keras_mtl.layers.cdot import CDot
from keras_mtl.layers.cin import CIN
from keras_mtl.layers.dcn import DCN
from keras_mtl.layers.dense import Dense
from keras_mtl.layers.feature_seq import DIEN
from keras_mtl.layers.feature_seq import DIN
from keras_mtl.layers.feature_seq import DMR_U2I
from keras_mtl.layers.grad_norm import GradNorm
from keras_mtl.layers.group_int import FFM
from keras_mtl.layers.group_int import GroupInt
from keras_mtl.layers.hierarchical_moe import HierarchicalMoE
from keras_mtl.layers.layer_norm import LayerNorm
from keras_mtl.layers.logit_correction import LogitCorrection
from keras_mtl.layers.merge_tensor_list import MergeTensorList
from keras_mtl.layers.mlp import MLP
from keras_mtl.layers.mmoe import MMoE
from keras_mtl.layers.ple import CGC
from keras_mtl.layers.ple import PLE
from keras_mtl.layers.pooling import AvgPooling
from keras_mtl.layers.pooling import MaxPooling
from keras_mtl.layers.pooling import SumPooling
from keras_mtl.layers.senet import SeNet
from keras_mtl.layers.snr import SNR
from keras_mtl.layers.sparse_moe import SparseMoE
from keras_mtl.layers.sparse_nas import MixedNASLayer
from keras_mtl.layers.sparse_nas import NASGatingLayer
from keras_mtl.layers.sparse_nas import NASSelectionLayer
from keras_mtl.layers.sparse_nas import SimpleNasLayer
from keras_mtl.layers.sparse_nas import nas_masks as nas_masks
from keras_mtl.layers.uncertainty_weighting import UncertaintyWeighting

__all__ = [
    "AGRUCell",
    "CAN",
    "CDot",
    "CGC",
    "CIN",
    "DCN",
    "DIEN",
    "DIN",
    "DMR_U2I",
    "FFM",
    "MLP",
    "MMoE",
    "MixedNASLayer",
    "NASGatingLayer",
    "NASSelectionLayer",
    "PLE",
    "SNR",
    "SparseMoE",
    "Activation",
    "AddBias",
    "AllInt",
    "AutoInt",
    "AvgPooling",
    "Dense",
    "GradNorm",
    "GroupInt",
    "HierarchicalMoE",
    "LayerNorm",
    "LogitCorrection",
    "MaxPooling",
    "MergeTensorList",
    "SeNet",
    "SimpleNasLayer",
    "SumPooling",
    "UncertaintyWeighting",
]
