"""Study pipeline: profiles (``profile``), the run cache (``runs``) and the driver (``driver``).

Entry point: ``python -m anira.study --profile NAME`` (see ``anira/study.py``).
"""
from anira.pipeline.driver import EXECUTORS, ExecutorOptions, StudyError, check_kernel, format_plan, make_plan, run_study
from anira.pipeline.profile import (DRIVER_PARAMS, NotebookSpec, Profile, RunSpec, available_profiles, load_profile)
from anira.pipeline.runs import Layout, RunJob, RunLock, RunResult, execute_run, run_state

__all__ = ["EXECUTORS", "ExecutorOptions", "StudyError", "check_kernel", "format_plan", "make_plan", "run_study",
           "DRIVER_PARAMS", "NotebookSpec", "Profile", "RunSpec", "available_profiles", "load_profile",
           "Layout", "RunJob", "RunLock", "RunResult", "execute_run", "run_state"]
