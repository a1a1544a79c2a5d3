"""Optuna study orchestration, one module a job.

- :mod:`.storage`: storage URLs (masked in every output, checked before any work);
  :mod:`.storage_lock`: a lock across every process that uses one storage;
- :mod:`.opening`: opening a storage and a study with its sampler (seeded per process), finding a stored study;
- :mod:`.workers`: which worker runs which trial, and recovering the trials of dead workers;
- :mod:`.budget`: the trial budget every worker shares, and the study's tuning cap;
- :mod:`.sources`: where trials come from: sampled, or the grid's enqueued points;
- :mod:`.progress`: the progress bar;
- :mod:`.loop`: :func:`~dlas_dse.study.loop.run_study`, the optimisation loop.

A study lives in any SQLAlchemy storage (SQLite file by default). Rerunning the same command
resumes it: finished trials are kept, and a trial interrupted by a killed worker is marked failed
(immediately when the worker ran on this host, after the heartbeat grace period otherwise) and
enqueued again.
"""
