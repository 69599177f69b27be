"""spex-ray pipelines: the Ray job that plans, scores and reduces explanations at scale.

``run_job(load_config("configs/demo.yaml"))`` runs a job from Python; the ``spex-ray`` command
(``pipelines.cli``) runs, plans and shows jobs. Ray is used only inside this package.
"""

from pipelines.config import ConfigError, JobConfig, load_config

__all__ = ["ConfigError", "JobConfig", "load_config", "run_job"]


def run_job(config: JobConfig, **options):
    """Run (or resume) a job: ``pipelines.runner.run_job`` and its options (``limit``,
    ``fail_fast``, ``executor``), imported when first called."""
    from pipelines.runner import run_job as _run_job

    return _run_job(config, **options)
