"""Old import paths keep working: a module that became a package re-exports its public names.

The names are the public top-level names of each module before the rooms were made (one step of
the redesign moved ``verify/kkr.py`` into ``verify/kkr/`` and so on); README.md and the docs import
from these paths.
"""

import importlib

import pytest

OLD_PUBLIC_NAMES = {
    "verify.jlr": (
        "AutodiffHessian",
        "PREDICTION_RTOL",
        "check_jlr_equiv",
        "check_jlr_magnitude",
        "check_jlr_rank_blocks",
        "check_jlr_rank_ft",
        "check_jlr_rank_nuc",
        "check_jlr_zero_saddle",
        "lora_hessian_dense",
    ),
    "verify.kkr": (
        "Blocks",
        "Evidence",
        "RANK_RTOL",
        "check_kkr_bias",
        "check_kkr_dichotomy",
        "check_kkr_includes_jlr",
        "check_kkr_loud",
        "check_kkr_magnitude",
        "check_kkr_sgd_rank",
        "check_kkr_special",
        "collect_evidence",
    ),
    "verify.wyl": (
        "FirstStep",
        "check_wyl_alignment",
        "check_wyl_directions",
        "check_wyl_first_step",
        "check_wyl_unchanged",
        "first_step",
        "pipeline_tolerance",
    ),
    "verify.hsk": (
        "autograd_gradients",
        "check_hsk_above",
        "check_hsk_below",
        "check_hsk_exact",
        "check_hsk_poly_error",
        "fit_exponent",
        "rank_grid",
    ),
    "verify.sweep": (
        "CHUNK_SECONDS",
        "MAX_CHUNK",
        "MAX_CONFIG_BYTES",
        "MAX_TASKS",
        "SweepAborted",
        "SweepConfig",
        "SweepConfigError",
        "SweepSummary",
        "Task",
        "check_task_count",
        "config_hash",
        "count_tasks",
        "expand",
        "iter_tasks",
        "load_config",
        "open_sweep_store",
        "parse_config",
        "run_sweep",
    ),
    "verify.cli": ("EXIT_BAD_INPUT", "EXIT_INTERNAL", "main"),
    "landscapes.curvature": (
        "LambdaMin",
        "LoRAHessianOperator",
        "Method",
        "flatten_factors",
        "gradient_seconds",
        "lambda_min",
        "lambda_min_dense",
        "lambda_min_lanczos",
        "lambda_min_structured",
        "smallest_ritz_pair",
        "unflatten_factors",
    ),
    "landscapes.nonlinear": (
        "Blocks",
        "NonlinearProblem",
        "SensingStructure",
        "attention_block",
        "double_well",
        "double_well_minimum",
        "double_well_points",
        "from_problem",
        "matrix_sensing",
        "nonlinear_sensing",
        "quadratic_sensing",
        "shifted",
        "two_layer",
    ),
    "landscapes.transformer": (
        "DEFAULT_LABEL_WORDS",
        "DEFAULT_TARGETS",
        "DEFAULT_TEMPLATE",
        "Form",
        "Head",
        "LinearizationCheck",
        "LinearizedEncoder",
        "ModelLoadError",
        "Pooling",
        "Target",
        "adapted_logits",
        "default_model_path",
        "load_encoder",
        "review_encoder",
        "review_nonlinear_problem",
        "review_problem",
        "target_weights",
        "transformer_problem",
    ),
    "landscapes.data": (
        "REVIEWS_FILE",
        "TextData",
        "load_reviews",
        "load_text_file",
        "reviews_path",
        "train_test_split",
    ),
}


@pytest.mark.parametrize("module", sorted(OLD_PUBLIC_NAMES))
def test_old_module_paths_keep_their_public_names(module):
    m = importlib.import_module(module)
    missing = [n for n in OLD_PUBLIC_NAMES[module] if not hasattr(m, n)]
    assert not missing, f"{module} lost {missing}"
