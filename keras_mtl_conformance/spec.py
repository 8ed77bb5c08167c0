"""Loading, validating and materializing layer specs (no Keras import here).

A spec is `specs/<layer>/spec.yaml`; its generated goldens live beside it in
`golden.yaml`. Both are read with `safe_load` (PyYAML's safe loader). Every
error raised here is a `SpecError` naming the file, the case and the field.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import pathlib
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

import jsonschema
import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
# PyYAML's safe loader with its C parser (libyaml) where PyYAML was built with
# it: the same documents and the same plain types as `yaml.safe_load`, about
# 6x faster. Every process that collects the suite reads all 36 specs (1.2 s
# in Python), and the goldens are 0.8 MB.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# A clone's own specs; once installed (no `specs/` beside the package), the
# `specs/` folder of the current directory.
DEFAULT_SPEC_DIR = (
    ROOT / "specs" if (ROOT / "specs").is_dir() else pathlib.Path.cwd() / "specs"
)
SCHEMA_PATH = pathlib.Path(__file__).resolve().parent / "schema" / "spec.schema.json"
GOLDEN_NAME = "golden.yaml"
SPEC_NAME = "spec.yaml"

ALL_CHECKS = (
    "config_roundtrip",
    "build",
    "symbolic",
    "forward",
    "compiled",
    "grad",
    "keras_file",
    "cross_backend",
    "stochastic",
)
DEFAULT_CHECKS = (
    "config_roundtrip",
    "build",
    "symbolic",
    "forward",
    "grad",
    "keras_file",
    "cross_backend",
)
DEFAULT_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
T = TypeVar("T")
COMPUTE_DTYPE = {
    "float32": "float32",
    "mixed_float16": "float16",
    "mixed_bfloat16": "bfloat16",
}


class SpecError(ValueError):
    """A malformed spec; the message names the file, case and field."""

    def __init__(
        self,
        path: pathlib.Path | str,
        message: str,
        case: str | None = None,
        field: str | None = None,
    ) -> None:
        where = str(path)
        if case is not None:
            where += f", case '{case}'"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a worker process of `goldens`: it crosses back whole.
        return _spec_error_from_text, (str(self),)


def _spec_error_from_text(text: str) -> SpecError:
    err = SpecError.__new__(SpecError)
    ValueError.__init__(err, text)
    return err


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """A comparison bound `|got - want| <= atol + rtol * |want|`.

    In a spec it is an override: `reason` is required, a missing `rtol` or
    `atol` keeps the default, and the selectors (`check`, `policy`, `backend`,
    `device`) say where it applies. `keras_mtl_conformance.compare.tolerance` resolves
    it to the bound a check uses, keeping the override's reason (None for a
    default bound).
    """

    rtol: float | None = None
    atol: float | None = None
    reason: str | None = None
    check: str | None = None
    policy: str | None = None
    backend: str | None = None
    device: str | None = None

    def applies(self, check: str, policy: str, backend: str, device: str) -> bool:
        return all(
            want is None or want == got
            for want, got in (
                (self.check, check),
                (self.policy, policy),
                (self.backend, backend),
                (self.device, device),
            )
        )


@dataclasses.dataclass
class Case:
    spec: LayerSpec
    id: str
    description: str
    config: dict[str, Any]
    training: bool
    call_kwargs: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    weights: dict[str, dict[str, Any]]
    checks: tuple[str, ...]
    dtype_policies: tuple[str, ...]
    tolerances: tuple[Tolerance, ...]
    expected_exact: dict[str, Any]
    stochastic: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.spec.name}/{self.id}"

    def input_arrays(self) -> dict[str, np.ndarray]:
        return {k: self._materialize("inputs", k, t) for k, t in self.inputs.items()}

    def weight_arrays(self) -> dict[str, np.ndarray]:
        return {k: self._materialize("weights", k, t) for k, t in self.weights.items()}

    def trainable_weights(self) -> list[str]:
        return [k for k, t in self.weights.items() if t.get("trainable", True)]

    def split_inputs(
        self, values: Mapping[str, T] | Sequence[T]
    ) -> tuple[list[T], dict[str, T]]:
        """Positional inputs (in spec order) and tensor keyword arguments.

        `values` holds one value per spec input, by name or in spec order
        (NumPy arrays for the references, backend tensors for the layer).
        Inputs with a `kwarg` key (masks, say) become keyword arguments.
        """
        if not isinstance(values, Mapping):
            values = dict(zip(self.inputs, values, strict=True))
        positional = [values[k] for k, t in self.inputs.items() if "kwarg" not in t]
        kwargs = {t["kwarg"]: values[k] for k, t in self.inputs.items() if "kwarg" in t}
        return positional, kwargs

    def float_inputs(self) -> list[str]:
        """Differentiable inputs: positional float32 tensors."""
        return [
            k
            for k, t in self.inputs.items()
            if t.get("dtype", "float32") == "float32" and "kwarg" not in t
        ]

    def _materialize(self, group: str, key: str, tensor: dict[str, Any]) -> np.ndarray:
        try:
            return materialize(tensor)
        except ValueError as err:
            raise SpecError(
                self.spec.path, str(err), self.id, f"{group}.{key}"
            ) from err

    def tolerance(
        self, check: str, policy: str, backend: str, device: str
    ) -> Tolerance | None:
        """The last matching override, if any."""
        found = None
        for tol in self.tolerances:
            if tol.applies(check, policy, backend, device):
                found = tol
        return found


@dataclasses.dataclass
class ExportCase:
    """A case the `export` check exports; `static_batch` says why its batch
    size must be fixed (None: the exported model takes any batch size)."""

    case: Case
    static_batch: str | None = None


@dataclasses.dataclass
class LayerSpec:
    path: pathlib.Path
    name: str
    layer: str
    reference: str
    description: str
    deviations: list[dict[str, str]]
    call_format: str
    outputs: list[str]
    losses: list[str]
    cases: list[Case]
    raw: dict[str, Any]
    export: list[ExportCase] = dataclasses.field(default_factory=list)

    @property
    def golden_path(self) -> pathlib.Path:
        return self.path.parent / GOLDEN_NAME

    @property
    def spec_dir_option(self) -> str:
        """` --spec-dir DIR` for commands about this spec; empty for `specs/`."""
        if self.path.is_relative_to(DEFAULT_SPEC_DIR):
            return ""
        return f" --spec-dir {self.path.parent.parent}"

    def reference_fn(self) -> Callable[..., dict[str, Any]]:
        return resolve(self.reference, self.path, "reference")

    def reference_source_files(self) -> list[pathlib.Path]:
        module = self.reference.split(":")[0]
        source = pathlib.Path(resolve(f"{module}:__file__", self.path, "reference"))
        files = [source]
        common = source.parent / "common.py"
        if common.exists() and common not in files:
            files.append(common)
        return files

    def spec_sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def reference_sha256(self) -> str:
        digest = hashlib.sha256()
        for f in sorted(self.reference_source_files()):
            digest.update(f.read_bytes())
        return digest.hexdigest()


def resolve(dotted: str, path: pathlib.Path | str, field: str) -> Any:
    """Imports `pkg.mod:attr` or `pkg.mod.Attr`; errors name the spec field."""
    if ":" in dotted:
        module, attr = dotted.split(":", 1)
    else:
        module, _, attr = dotted.rpartition(".")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise SpecError(
            path, f"cannot import module '{module}' ({err})", field=field
        ) from err
    if not hasattr(mod, attr):
        raise SpecError(
            path, f"module '{module}' has no attribute '{attr}'", field=field
        )
    return getattr(mod, attr)


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def _schema_errors(path: pathlib.Path, raw: Any) -> None:
    errors = sorted(_validator().iter_errors(raw), key=lambda e: list(e.path))
    if not errors:
        return
    err = errors[0]
    loc = list(err.path)
    case = None
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        cases = raw.get("cases", [])
        entry = cases[loc[1]] if loc[1] < len(cases) else {}
        case = (
            entry.get("id", f"#{loc[1]}") if isinstance(entry, dict) else f"#{loc[1]}"
        )
        loc = loc[2:]
    field = ".".join(str(p) for p in loc) or "<root>"
    message = err.message
    if isinstance(err.instance, str) and _looks_numeric(err.instance):
        message += (
            " (YAML 1.1 reads exponents without a dot as strings: "
            "write 1.0e-3, not 1e-3)"
        )
    raise SpecError(path, message, case, field)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def safe_load(text: str) -> Any:
    """`yaml.safe_load`, with libyaml's parser where it is available."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)


def load_spec(path: pathlib.Path | str) -> LayerSpec:
    """Loads and validates one `spec.yaml`."""
    path = pathlib.Path(path)
    try:
        raw = safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(path, f"invalid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise SpecError(path, "a spec must be a mapping at the top level")
    _schema_errors(path, raw)

    defaults = raw.get("defaults", {})
    default_checks = tuple(defaults.get("checks", DEFAULT_CHECKS))
    default_policies = tuple(defaults.get("dtype_policies", DEFAULT_POLICIES))
    spec = LayerSpec(
        path=path,
        name=path.parent.name,
        layer=raw["layer"],
        reference=raw["reference"],
        description=raw["description"],
        deviations=raw.get("deviations", []),
        call_format=raw.get("call_format", "single"),
        outputs=raw.get("outputs", ["output"]),
        losses=raw.get("losses", []),
        cases=[],
        raw=raw,
    )
    seen: set[str] = set()
    for entry in raw["cases"]:
        cid = entry["id"]
        if cid in seen:
            raise SpecError(path, "duplicate case id", cid, "id")
        seen.add(cid)
        call = entry.get("call", {})
        case = Case(
            spec=spec,
            id=cid,
            description=entry.get("description", ""),
            config=entry["config"],
            training=bool(call.get("training", False)),
            call_kwargs=call.get("kwargs", {}),
            inputs=entry["inputs"],
            weights=entry.get("weights", {}),
            checks=tuple(entry.get("checks", default_checks)),
            dtype_policies=tuple(entry.get("dtype_policies", default_policies)),
            tolerances=tuple(Tolerance(**t) for t in entry.get("tolerance", [])),
            expected_exact=entry.get("expected_exact", {}),
            stochastic=entry.get("stochastic", {}),
        )
        if ("stochastic" in case.checks) != bool(case.stochastic):
            raise SpecError(
                path,
                "the `stochastic` check and a `stochastic` block go together",
                cid,
                "stochastic",
            )
        if "float32" not in case.dtype_policies:
            raise SpecError(
                path, "float32 must be among the policies", cid, "dtype_policies"
            )
        positional = [k for k, t in case.inputs.items() if "kwarg" not in t]
        if spec.call_format == "single" and len(positional) != 1:
            raise SpecError(
                path, "call_format 'single' takes exactly one input", cid, "inputs"
            )
        for group in ("inputs", "weights"):
            for key, tensor in getattr(case, group).items():
                case._materialize(group, key, tensor)
        spec.cases.append(case)
    spec.export = _export_cases(path, spec, raw.get("export"))
    return spec


def _export_cases(
    path: pathlib.Path, spec: LayerSpec, entries: list[dict[str, str]] | None
) -> list[ExportCase]:
    by_id = {case.id: case for case in spec.cases}
    if entries is None:
        first = next(
            (c for c in spec.cases if "forward" in c.checks and not c.training), None
        )
        return [] if first is None else [ExportCase(first)]
    out = []
    for entry in entries:
        case = by_id.get(entry["case"])
        if case is None:
            raise SpecError(
                path,
                f"no case '{entry['case']}' (cases: {sorted(by_id)})",
                field="export",
            )
        if "forward" not in case.checks or case.training:
            raise SpecError(
                path,
                "an exported case must have a `forward` check and not train",
                case.id,
                "export",
            )
        out.append(ExportCase(case, entry.get("static_batch")))
    return out


def discover(spec_dirs: list[pathlib.Path | str] | None = None) -> list[LayerSpec]:
    """All specs under the given directories (default: `DEFAULT_SPEC_DIR`).

    A spec is `<dir>/<layer>/spec.yaml` or, grouped by family,
    `<dir>/<family>/<layer>/spec.yaml` (as the repo's own specs are); its
    name is its folder's, which must be unique.
    """
    dirs = [pathlib.Path(d) for d in (spec_dirs or [DEFAULT_SPEC_DIR])]
    specs = []
    for d in dirs:
        if not d.is_dir():
            raise SpecError(
                d, "spec directory does not exist (give yours with --spec-dir)"
            )
        paths = [*d.glob(f"*/{SPEC_NAME}"), *d.glob(f"*/*/{SPEC_NAME}")]
        specs.extend(load_spec(p) for p in sorted(paths, key=lambda p: p.parent.name))
    names = [spec.name for spec in specs]
    for spec in specs:
        if names.count(spec.name) > 1:
            raise SpecError(spec.path, f"another spec is also named {spec.name!r}")
    return specs


def find(name: str, spec_dirs: list[pathlib.Path | str] | None = None) -> LayerSpec:
    """The spec named `name` (its folder's name) under `spec_dirs`; only its
    own file is read."""
    for d in [pathlib.Path(d) for d in (spec_dirs or [DEFAULT_SPEC_DIR])]:
        paths = [*d.glob(f"{name}/{SPEC_NAME}"), *d.glob(f"*/{name}/{SPEC_NAME}")]
        if paths:
            return load_spec(paths[0])
    raise KeyError(f"no spec named {name!r}")


# --- tensors ---------------------------------------------------------------

_NP_DTYPES = {"float32": np.float64, "int32": np.int32, "bool": np.bool_}


def materialize(tensor: dict[str, Any]) -> np.ndarray:
    """Builds a tensor from inline data or a seeded generator.

    Generators use NumPy's legacy `RandomState`, whose streams are frozen
    across NumPy versions. Float tensors are returned in float64 holding
    float32-representable values, so the float64 reference sees exactly what
    a float32 layer sees.
    """
    shape = tuple(tensor["shape"])
    dtype = tensor.get("dtype", "float32")
    if "data" in tensor:
        arr = np.asarray(tensor["data"], dtype=np.float64)
        if arr.size != int(np.prod(shape)):
            raise ValueError(
                f"data has {arr.size} elements but shape {list(shape)} needs "
                f"{int(np.prod(shape))}"
            )
        arr = arr.reshape(shape)
    else:
        arr = _generate(tensor["generator"], shape)
    if dtype == "float32":
        return arr.astype(np.float32).astype(np.float64)
    if dtype == "int32":
        if not np.all(arr == np.round(arr)):
            raise ValueError("int32 tensor has non-integer values")
        return arr.astype(np.int32)
    return arr.astype(np.bool_)


def _generate(gen: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    kind = gen["kind"]
    rng = np.random.RandomState(gen.get("seed", 0))
    if kind == "normal":
        return rng.standard_normal(shape) * gen.get("scale", 1.0)
    if kind == "uniform":
        low, high = gen.get("low", 0.0), gen.get("high", 1.0)
        return rng.uniform(low, high, size=shape)
    if kind == "randint":
        return rng.randint(
            int(gen.get("low", 0)), int(gen.get("high", 2)), size=shape
        ).astype(np.float64)
    if kind == "constant":
        return np.full(shape, float(gen.get("value", 0.0)))
    if kind == "arange":
        n = int(np.prod(shape))
        return (gen.get("start", 0.0) + gen.get("step", 1.0) * np.arange(n)).reshape(
            shape
        )
    raise ValueError(f"unknown generator kind '{kind}'")


# --- dtype rounding for mixed-precision goldens ----------------------------


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Rounds float64 values to `dtype` (round to nearest even) and back."""
    if not np.issubdtype(np.asarray(x).dtype, np.floating):
        return x
    if dtype == "float32":
        return x.astype(np.float32).astype(np.float64)
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
        rounding = 0x7FFF + ((bits >> 16) & 1)
        rounded = ((bits + rounding) >> 16) << 16
        out = rounded.astype(np.uint32).view(np.float32).astype(np.float64)
        return np.where(np.isnan(x), np.nan, out)
    raise ValueError(f"unknown dtype {dtype}")
