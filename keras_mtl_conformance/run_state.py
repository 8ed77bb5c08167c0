"""The settings of the current conformance run.

`conftest.pytest_configure` fills `STATE` from the command line and the
environment before any check runs; the checks read it. Keys: `backend`,
`device`, `device_name` (GPU runs), `started`, `spec_dirs`, `cross_dir`,
`save_keras_dir`, `report_dir`, `expectations`; the end of the run adds
`unused_expectations` and `summary`.
"""

from __future__ import annotations

from typing import Any

STATE: dict[str, Any] = {}
