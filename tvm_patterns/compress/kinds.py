"""Configuration of the pruners: one registry of pruning kinds, one entry per module.

A configuration is a list of plain dicts keyed by module name, as in ``torch.ao.pruning``::

    [{"module": "features.3", "kind": "pattern", "patterns": 8, "connectivity": 3.6},
     {"module": "features.6", "kind": "connectivity", "connectivity": 2.0},
     {"module": "classifier", "kind": "block", "block_rows": 8, "sparsity": 0.75},
     {"module": "features.8", "kind": "pattern", "connectivity": 3.6, "quantize": {"scheme": "sp2", "bits": 4}},
     {"module": "features.10", "kind": "dense", "quantize": {"scheme": "uniform", "bits": 4}},
     {"module": "classifier.0", "kind": "circulant", "block": 16},
     {"module": "layer1.0.conv1", "kind": "column_combine", "group": 4}]

Any entry may carry ``quantize`` (``sparsity.quantization``: scheme, bits and the scheme's options):
its projection prunes, then quantizes the survivors (the intersection of the two sets, the way
ADMM's Z-update needs it). Kind "dense" prunes nothing (quantization alone). Kind "circulant" ties
weights instead of zeroing them: its retraining trains the tied values (``Kind.tied``).

Adding a kind touches one place: a function decorated with ``@register_kind`` that checks the
module and the entry's options and returns the projection of the module's weight.
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from tvm_patterns.sparsity import PatternLibrary
from tvm_patterns.sparsity.quantization import check_scheme

from .projections import (project_block_punched, project_circulant, project_column_combine,
                          project_connectivity, project_filter_block_pattern, project_pattern_connectivity,
                          project_quantized)

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Kind:
    name: str
    defaults: dict           # every option the kind accepts, with its default (None: required)
    make: Callable           # (name, module, options, library | None) -> Projection
    uses_library: bool
    tied: bool = False       # ties weights instead of zeroing them: its projection is differentiable and
                             # retraining runs the forward through it (it trains the tied values)


KINDS: dict[str, Kind] = {}


def register_kind(name: str, uses_library: bool = False, tied: bool = False, **defaults):
    def register(make):
        KINDS[name] = Kind(name, defaults, make, uses_library, tied)
        return make
    return register


@dataclass(frozen=True, eq=False)
class Constraint:
    """One configuration entry bound to its module: ``project`` maps the weight onto the structure."""
    name: str
    module: nn.Module
    kind: str
    options: dict
    project: Projection
    library: PatternLibrary | None = field(default=None)
    quantize: dict | None = field(default=None)     # the entry's quantizer (scheme, bits, options), if any
    tied: bool = field(default=False)               # a tied kind (circulant): see Kind.tied

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight


def _check_3x3_conv(name: str, module: nn.Module, kind: str, connectivity: float = 1.0):
    """A 3x3 conv (grouped and depthwise too: each kernel gets its pattern; connectivity counts the
    kernels of the whole layer, so a depthwise conv, one kernel a channel, takes none)."""
    if not (isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3)):
        raise ValueError(f"{kind} pruning of '{name}': needs a 3x3 nn.Conv2d, got {module}")
    if module.groups > 1 and module.in_channels == module.groups and connectivity != 1:
        raise ValueError(f"'{name}' is a depthwise conv (one kernel a channel): connectivity must be 1 "
                         f"(pattern only), got {connectivity!r}")


def check_connectivity(name: str, rate):
    """A connectivity rate keeps 1 kernel in ``rate``: a finite number >= 1."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) or rate < 1:
        raise ValueError(f"'{name}': connectivity rate must be a finite number >= 1 (keep 1 kernel in rate), "
                         f"got {rate!r}")


def _check_positive_int(name: str, key: str, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"'{name}': {key} must be a positive integer, got {value!r}")


@register_kind("pattern", uses_library=True, patterns=8, taps=4, connectivity=1.0)
def _pattern(name, module, options, library):
    check_connectivity(name, options["connectivity"])
    _check_3x3_conv(name, module, "pattern", options["connectivity"])
    return lambda w: project_pattern_connectivity(w, library, options["connectivity"])


@register_kind("filter_block_pattern", uses_library=True, patterns=8, taps=4, connectivity=1.0, filters=4)
def _filter_block_pattern(name, module, options, library):
    """Pattern + connectivity shared by blocks of ``filters`` consecutive filters (``sparsity.filter_block``)."""
    check_connectivity(name, options["connectivity"])
    _check_3x3_conv(name, module, "filter_block_pattern", options["connectivity"])
    _check_positive_int(name, "filters", options["filters"])
    if module.groups != 1:
        raise ValueError(f"filter_block_pattern pruning of '{name}': needs groups=1, got groups={module.groups}")
    return lambda w: project_filter_block_pattern(w, library, options["connectivity"], int(options["filters"]))


@register_kind("dense")
def _dense(name, module, options, library):
    """Every weight kept: an entry that only quantizes."""
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise ValueError(f"'{name}': quantization needs an nn.Conv2d or nn.Linear, got {module}")
    return lambda w: w.detach().clone()


QUANTIZE_OPTIONS = {"scheme": None, "bits": None, "sp2_share": 0.5, "group": 8, "terms": 12}


def check_quantize(name: str, spec) -> dict:
    """An entry's ``quantize`` option: a dict of scheme, bits and the scheme's options, checked."""
    if not isinstance(spec, dict):
        raise ValueError(f"'{name}': quantize must be a dict with 'scheme' and 'bits', got {spec!r}")
    unknown = sorted(set(spec) - set(QUANTIZE_OPTIONS))
    if unknown:
        raise ValueError(f"'{name}': quantize has unknown option(s) {unknown} (options: {sorted(QUANTIZE_OPTIONS)})")
    missing = [k for k in ("scheme", "bits") if k not in spec]
    if missing:
        raise ValueError(f"'{name}': quantize needs {missing} (options: {sorted(QUANTIZE_OPTIONS)})")
    options = {**QUANTIZE_OPTIONS, **spec}
    try:
        check_scheme(**options)
    except ValueError as e:
        raise ValueError(f"'{name}': {e}") from None
    return options


def _then_quantize(prune: Projection, quantize: dict) -> Projection:
    """Prune, then put the survivors on the quantizer's grid (every grid keeps zero)."""
    return lambda w: project_quantized(prune(w), **quantize)


@register_kind("connectivity", connectivity=None)
def _connectivity(name, module, options, library):
    check_connectivity(name, options["connectivity"])
    _check_3x3_conv(name, module, "connectivity", options["connectivity"])
    return lambda w: project_connectivity(w, options["connectivity"])


def _check_matrix_layer(name: str, module: nn.Module, kind: str):
    """An nn.Linear or a 1x1 conv with groups=1: a [out, in] matrix."""
    is_1x1 = isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
    if not (is_1x1 or isinstance(module, nn.Linear)):
        raise ValueError(f"{kind} of '{name}': needs an nn.Linear or a 1x1 nn.Conv2d with groups=1, got {module}")


@register_kind("block", block_rows=None, sparsity=None)
def _block(name, module, options, library):
    _check_matrix_layer(name, module, "block pruning")
    _check_positive_int(name, "block_rows", options["block_rows"])
    s = options["sparsity"]
    if isinstance(s, bool) or not isinstance(s, numbers.Real) or not 0 <= s < 1:   # NaN fails too
        raise ValueError(f"'{name}': block sparsity must be a number in [0, 1), got {s!r}")
    return lambda w: project_block_punched(w, int(options["block_rows"]), float(s))


@register_kind("circulant", tied=True, block=None)
def _circulant(name, module, options, library):
    """b x b circulant blocks (CirCNN): the projection averages each block along its diagonals."""
    _check_matrix_layer(name, module, "circulant")
    _check_positive_int(name, "block", options["block"])
    b = int(options["block"])
    out_f, in_f = module.weight.shape[:2]
    if b < 2 or out_f % b or in_f % b:
        raise ValueError(f"circulant of '{name}': block {b} must be >= 2 and divide both the {out_f} outputs "
                         f"and the {in_f} inputs")
    return lambda w: project_circulant(w, b)


@register_kind("column_combine", group=None)
def _column_combine(name, module, options, library):
    """Columns combined in groups of ``group`` consecutive input channels, one weight a row per group."""
    _check_matrix_layer(name, module, "column combining")
    _check_positive_int(name, "group", options["group"])
    if int(options["group"]) < 2:
        raise ValueError(f"'{name}': group must be >= 2 (columns combined into one), got {options['group']!r}")
    return lambda w: project_column_combine(w, int(options["group"]))


def _entry_options(entry, modules: dict[str, nn.Module]) -> tuple[str, nn.Module, Kind, dict]:
    if not isinstance(entry, dict) or "module" not in entry:
        raise ValueError(f"each configuration entry must be a dict with a 'module' key, got {entry!r}")
    name = entry["module"]
    if name not in modules:
        near = difflib.get_close_matches(str(name), [n for n in modules if n], n=3)
        hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
        raise ValueError(f"no module named '{name}' in the model{hint}")
    kind = KINDS.get(entry.get("kind"))
    if kind is None:
        raise ValueError(f"'{name}': unknown pruning kind {entry.get('kind')!r}, expected one of {sorted(KINDS)}")
    unknown = set(entry) - {"module", "kind", "quantize"} - set(kind.defaults)
    if unknown:
        raise ValueError(f"'{name}': unknown option(s) {sorted(unknown)} for kind '{kind.name}', "
                         f"expected {sorted(kind.defaults)}")
    options = {**kind.defaults, **{k: v for k, v in entry.items() if k not in ("module", "kind", "quantize")}}
    missing = [k for k, v in options.items() if v is None]
    if missing:
        raise ValueError(f"'{name}': kind '{kind.name}' needs option(s) {missing}")
    return name, modules[name], kind, options


def parse_config(model: nn.Module, config, library: PatternLibrary | None = None) -> list[Constraint]:
    """Check every entry against the model; returns one Constraint per entry, in order.

    library: the pattern library of every "pattern" entry (their "patterns" / "taps", when given,
    must match it); None extracts, per (patterns, taps), the most frequent top-taps masks of the
    current weights of the "pattern" modules (PatDNN's way: prune a pretrained model with patterns
    it already has).
    """
    if isinstance(config, dict):
        config = [config]
    modules = dict(model.named_modules())
    parsed, seen = [], set()
    for entry in config:
        name, module, kind, options = _entry_options(entry, modules)
        if name in seen:
            raise ValueError(f"'{name}' appears more than once in the configuration")
        seen.add(name)
        if kind.uses_library:   # before extraction reads every pattern module's weight
            _check_3x3_conv(name, module, kind.name)
            _check_positive_int(name, "patterns", options["patterns"])
            _check_positive_int(name, "taps", options["taps"])
        if kind.uses_library and library is not None:
            asked = (entry.get("patterns", library.size), entry.get("taps", library.taps))
            if asked != (library.size, library.taps):
                raise ValueError(f"'{name}': asks for {asked[0]} patterns x {asked[1]} taps but the given library is {library}")
            options.update(patterns=library.size, taps=library.taps)
        quant = check_quantize(name, entry["quantize"]) if "quantize" in entry else None
        if quant is not None and kind.tied:
            raise ValueError(f"'{name}': kind '{kind.name}' ties weights across output channels; a per-channel "
                             f"quantization grid would untie them (quantize is not supported with it)")
        parsed.append((name, module, kind, options, quant))

    pattern_weights = [m.weight.detach().cpu().float().numpy() for _, m, k, _, _ in parsed if k.uses_library]
    libraries: dict[tuple, PatternLibrary] = {}

    def library_for(name, options) -> PatternLibrary:
        if library is not None:
            return library
        key = (options["patterns"], options["taps"])
        if key not in libraries:
            libraries[key] = PatternLibrary.extract(pattern_weights, *key)
        return libraries[key]

    constraints = []
    for name, module, kind, options, quant in parsed:
        lib = library_for(name, options) if kind.uses_library else None
        project = kind.make(name, module, options, lib)
        if quant is not None:
            project = _then_quantize(project, quant)
        constraints.append(Constraint(name, module, kind.name, options, project, lib, quant, kind.tied))
    return constraints
