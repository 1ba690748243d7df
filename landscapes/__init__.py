"""Numerics of LoRA landscapes (torch): problems, losses, objectives, solvers, certificates."""

from landscapes.curvature import LambdaMin, lambda_min
from landscapes.full_ft import FTSolution, solve_ft
from landscapes.io import load_problem, save_problem
from landscapes.lora import LoRAPoint, balanced_factors, lora_value, lora_value_and_grad, minimize_lora
from landscapes.losses import LOSS_NAMES, CrossEntropyLoss, LogisticLoss, Loss, SquaredLoss, get_loss
from landscapes.nuc import NucCertificate, NucSolution, nuc_certificate, solve_nuc
from landscapes.operators import DenseOperator, FunctionOperator, LinearOperator
from landscapes.problem import Problem
from landscapes.rank_reduction import RankReduction, reduce_rank
from landscapes.sosp import SOSPCertificate, certify_sosp, find_sosp
from landscapes.synthetic import gaussian_problem, random_features_problem, teacher_problem
from landscapes.transformer.data import TextData, load_reviews, load_text_file, train_test_split
from landscapes.transformer.encoder import (
    LinearizationCheck,
    LinearizedEncoder,
    load_encoder,
    review_problem,
    transformer_problem,
)

__all__ = [
    "Problem",
    "Loss",
    "SquaredLoss",
    "LogisticLoss",
    "CrossEntropyLoss",
    "get_loss",
    "LOSS_NAMES",
    "LinearOperator",
    "DenseOperator",
    "FunctionOperator",
    "gaussian_problem",
    "teacher_problem",
    "random_features_problem",
    "LoRAPoint",
    "lora_value",
    "lora_value_and_grad",
    "balanced_factors",
    "minimize_lora",
    "NucCertificate",
    "NucSolution",
    "nuc_certificate",
    "solve_nuc",
    "RankReduction",
    "reduce_rank",
    "FTSolution",
    "solve_ft",
    "save_problem",
    "load_problem",
    "LambdaMin",
    "lambda_min",
    "SOSPCertificate",
    "certify_sosp",
    "find_sosp",
    "TextData",
    "load_reviews",
    "load_text_file",
    "train_test_split",
    "LinearizedEncoder",
    "LinearizationCheck",
    "load_encoder",
    "transformer_problem",
    "review_problem",
]
