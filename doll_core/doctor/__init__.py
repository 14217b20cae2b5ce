"""``doll doctor``: check a run folder, an ablation, a stages folder or a label store.

It reads everything a later ``doll run --resume`` (or a reader) would read and says what
is wrong, file by file, without changing anything:

- stage folders (``STAGES/<kind>-<label>-<key>``): finished (a valid ``stage.json``) or
  interrupted (no ``stage.json``), the SHA-256 of each file ``stage.json`` recorded, the
  outputs each kind leaves for later stages, every checkpoint loaded the way DoLL loads
  it (``weights_only``; a truncated, empty or pickled file is named), every JSON file
  parsed, temporary files of killed writes;
- label stores, deeply: ``config.json`` and ``manifest.json`` against each other and
  against the shard files on disk (missing, orphan, temporary, size, SHA-256, loadable,
  images per shard);
- versions: the DoLL that finished each stage and the versions ``results.json`` recorded
  against the ones installed now;
- the plan: the run's ``experiment.json`` is replayed through the runner without doing
  any work, so the stage keys are this DoLL's; each stage is then reused, continued,
  redone or run new, as ``doll run --resume`` would. A finished stage whose recorded
  files no longer match (or whose ``stage.json`` is unreadable) is recomputed; damage
  that no checksum in ``stage.json`` covers (a label shard, a file of an older DoLL's
  stage) is not: the report says so, and how to have the stage redone.

The modules, one job each: :mod:`~doll_core.doctor.findings` (what a report holds),
:mod:`~doll_core.doctor.files` (reading JSON and ``.pt`` files safely, versions),
:mod:`~doll_core.doctor.store` (label stores), :mod:`~doll_core.doctor.stages` (stage
folders), :mod:`~doll_core.doctor.plan` (the resume plan) and
:mod:`~doll_core.doctor.diagnose` (which checks a path gets: :func:`diagnose`).
"""

from __future__ import annotations

from doll_core.doctor.diagnose import diagnose
from doll_core.doctor.findings import Action, DoctorReport, Finding, Severity, Step

__all__ = ["Action", "DoctorReport", "Finding", "Severity", "Step", "diagnose"]
