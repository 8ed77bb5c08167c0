"""Public layers of keras_mtl, by family: core, multi_task, interaction,
sequence, moe, nas (one sub-package each)."""

from keras_mtl.layers.core.activation import Activation
from keras_mtl.layers.core.add_bias import AddBias
from keras_mtl.layers.core.dense import Dense
from keras_mtl.layers.core.layer_norm import LayerNorm
from keras_mtl.layers.core.logit_correction import LogitCorrection
from keras_mtl.layers.core.merge_tensor_list import MergeTensorList
from keras_mtl.layers.core.mlp import MLP
from keras_mtl.layers.core.pooling import AvgPooling
from keras_mtl.layers.core.pooling import MaxPooling
from keras_mtl.layers.core.pooling import SumPooling
from keras_mtl.layers.interaction.all_int import AllInt
from keras_mtl.layers.interaction.auto_int import AutoInt
from keras_mtl.layers.interaction.c_dot import CDot
from keras_mtl.layers.interaction.can import CAN
from keras_mtl.layers.interaction.cin import CIN
from keras_mtl.layers.interaction.dcn import DCN
from keras_mtl.layers.interaction.group_int import FFM
from keras_mtl.layers.interaction.group_int import GroupInt
from keras_mtl.layers.interaction.se_net import SeNet
from keras_mtl.layers.moe.hierarchical_moe import HierarchicalMoE
from keras_mtl.layers.moe.sparse_moe import SparseMoE
from keras_mtl.layers.multi_task.grad_norm import GradNorm
from keras_mtl.layers.multi_task.mmoe import MMoE
from keras_mtl.layers.multi_task.ple import CGC
from keras_mtl.layers.multi_task.ple import PLE
from keras_mtl.layers.multi_task.snr import SNR
from keras_mtl.layers.multi_task.uncertainty_weighting import UncertaintyWeighting
from keras_mtl.layers.nas.sparse_nas import MixedNASLayer
from keras_mtl.layers.nas.sparse_nas import NASGatingLayer
from keras_mtl.layers.nas.sparse_nas import NASSelectionLayer
from keras_mtl.layers.nas.sparse_nas import SimpleNasLayer
from keras_mtl.layers.nas.sparse_nas import nas_masks
from keras_mtl.layers.sequence.agru import AGRUCell
from keras_mtl.layers.sequence.agru import dynamic_rnn_with_attention
from keras_mtl.layers.sequence.agru import static_rnn_with_attention
from keras_mtl.layers.sequence.dien import DIEN
from keras_mtl.layers.sequence.din import DIN
from keras_mtl.layers.sequence.dmr_u2i import DMR_U2I

__all__ = [
    # core
    "Activation",
    "AddBias",
    "Dense",
    "LayerNorm",
    "LogitCorrection",
    "MergeTensorList",
    "MLP",
    "AvgPooling",
    "MaxPooling",
    "SumPooling",
    # multi_task
    "MMoE",
    "CGC",
    "PLE",
    "SNR",
    "GradNorm",
    "UncertaintyWeighting",
    # interaction
    "AllInt",
    "AutoInt",
    "CAN",
    "CDot",
    "CIN",
    "DCN",
    "GroupInt",
    "FFM",
    "SeNet",
    # sequence
    "AGRUCell",
    "dynamic_rnn_with_attention",
    "static_rnn_with_attention",
    "DIN",
    "DIEN",
    "DMR_U2I",
    # moe
    "SparseMoE",
    "HierarchicalMoE",
    # nas
    "NASSelectionLayer",
    "MixedNASLayer",
    "NASGatingLayer",
    "SimpleNasLayer",
    "nas_masks",
]
