"""Load and validate ``studies/*.yaml`` (:mod:`.study`) and ``search_spaces/*.yaml`` (:mod:`.space`).

Every problem is reported as a :class:`ConfigError` naming the file, the field and what is
allowed, before anything is trained or written to storage.
"""

from dlas_dse.config.locations import available, default_cache_dir
from dlas_dse.config.space import RULE_PREFIX, check_grid, load_space
from dlas_dse.config.study import SETTINGS, StudyConfig, load_study, settings_with_defaults
from dlas_dse.files import ConfigError

__all__ = ["RULE_PREFIX", "SETTINGS", "ConfigError", "StudyConfig", "available", "check_grid", "default_cache_dir",
           "load_space", "load_study", "settings_with_defaults"]
