"""Layer 5, auto-scheduling: MetaSchedule tuning with one database per target and thread count.

The database lives in the artifact cache (``tuning/<target key>/``) and is shared by every trial,
study and worker using that cache: a task (a fused PrimFunc, identified structurally) that has a
valid record is never tuned again. Tuning itself runs into a private database; each task's
default schedule and the search's best candidate are then timed side by side, and the faster one
is merged into the shared database under a file lock, so concurrent workers never interleave writes.
A task MetaSchedule cannot tune (e.g. a data-dependent sparse loop) keeps the project's default
schedule, and the record says so.

One module per job: :mod:`.allowance` (what a build and a study may spend; no TVM import),
:mod:`.database` (the shared database), :mod:`.measuring` (the builder pool and the runner),
:mod:`.choice` (default schedule or search's best, timed side by side) and :mod:`.search`
(``tune``: prepare, search, choose).
"""

from dlas_dse.stack.tuning.allowance import TuningAllowance, TuningBudget

__all__ = ["TuningAllowance", "TuningBudget"]
