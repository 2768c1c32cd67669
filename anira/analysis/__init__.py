"""Analyses behind notebooks 03-07: alignment, generalization, decision timing, efficiency, claims.

Input: per-token records (one row per scored token, ``_stats.RECORD_COLUMNS`` plus the tasks'
feature columns; ``load_records``) and per-run summaries (``load_summaries``). Every CI resamples
whole sequences within each run and averages statistics over runs (seeds); see ``_stats``. Tables
describe one configuration per (task, mechanism): filter a beta sweep with ``select`` (or add
"beta" to ``groups``); ``run_table`` lists the runs.

    03 alignment       depth_by_difficulty, alignment_table, depth_by_kind, complexity_vs_surprise,
                       training_curves (accuracy, depth and rho logged during training)
    04 generalization  by_size, extrapolation_table, width_table, test_time_depth, train_size_range
    05 timing          timing_decomposition, feature_importance, default_feature_sets, example_depths
    06 efficiency      pareto, speedup_table
    07 claims          claim_inputs, evaluate_claims, claims_table, thresholds, learning_table, random_match_table
Loading runs (``io``): resolve_run_dirs, runs_of_beta, load_study, select_beta, with_fixed_depth, example_sequence.
Measured early-exit speed-up (``speed``, imports torch): measure_speedup, summarize_speedup.
Figures and tables: ``anira.plotting``. (Synthetic records with known answers, for the tests: tests/synthetic.py.)
"""
from anira.analysis._stats import (ADAPTIVE, MECHANISMS, RECORD_COLUMNS, SPLITS, BootstrapConfig, check_columns,
                                   check_one_config, mean_by, run_table, select, spearman_by, weighted_spearman)
from anira.analysis.alignment import (SURPRISE_SOURCES, alignment_table, complexity_surprise_regression, complexity_vs_surprise,
                                      depth_by_difficulty, depth_by_kind, generator_entropy, reference_surprise,
                                      token_kind_labels)
from anira.analysis.claims import Claim, claim_inputs, claims_table, evaluate_claims, thresholds
from anira.analysis.efficiency import load_summaries, pareto, pareto_front, speedup_table, summaries_frame
from anira.analysis.generalization import (beyond_training, by_size, extrapolation_table, test_time_depth,
                                           train_size_range, training_steps, width_table)
from anira.analysis.io import (eval_examples, example_sequence, headline_beta, load_study, resolve_run_dirs,
                               runs_of_beta, select_beta, task_size_name, with_fixed_depth)
from anira.analysis.learning import LEARN_FLOOR_GAP, learning_table, random_match_table, training_curves
from anira.analysis.timing import default_feature_sets, example_depths, feature_importance, timing_decomposition


def load_records(paths) -> "pd.DataFrame":
    """Concatenate records.csv.gz files (one per run), in the order given."""
    import pandas as pd
    paths = [paths] if isinstance(paths, (str, bytes)) or hasattr(paths, "__fspath__") else list(paths)
    if not paths:
        raise ValueError("load_records: no paths given")
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


__all__ = ["ADAPTIVE", "MECHANISMS", "RECORD_COLUMNS", "SPLITS", "BootstrapConfig", "check_columns", "check_one_config",
           "mean_by", "run_table", "select", "spearman_by", "weighted_spearman", "alignment_table", "complexity_vs_surprise",
           "complexity_surprise_regression", "generator_entropy", "SURPRISE_SOURCES",
           "depth_by_difficulty", "depth_by_kind", "reference_surprise", "token_kind_labels", "Claim", "claim_inputs",
           "claims_table",
           "evaluate_claims", "thresholds", "load_summaries", "pareto", "pareto_front", "speedup_table", "summaries_frame", "by_size",
           "extrapolation_table", "test_time_depth", "width_table", "train_size_range", "beyond_training", "training_steps", "default_feature_sets",
           "example_depths", "feature_importance", "timing_decomposition", "load_records", "resolve_run_dirs", "load_study",
           "headline_beta", "select_beta", "runs_of_beta", "with_fixed_depth", "task_size_name", "eval_examples", "example_sequence",
           "LEARN_FLOOR_GAP", "learning_table", "random_match_table", "training_curves"]
