# The toy notebooks here are executed by tests/test_pipeline.py through the study driver, with the
# parameters it passes; nbval (`make test`) must not run them on their placeholder defaults.
collect_ignore_glob = ["*.ipynb"]
