"""The test program as the files describe it: learned at ingest, carried as data to every later step.

A tester's files say what was tested: each PTR's TEST_NUM, TEST_TXT, UNITS and limits (on the first
PTR of a test, scaled by LLM_SCAL / HLM_SCAL, absent where OPT_FLAG says so), each MPR pin, which
hard and soft bins are good (HBR / SBR HBIN_PF / SBIN_PF, else PRR PART_FLG), the die grid (WCR and
the dies' X/Y), and the program revision (MIR PART_TYP, JOB_NAM, JOB_REV). A reader returns a
`FileProgram` for every file; the ingest merges them into one `TestProgram` (the union of tests),
records the changes it saw between lots, writes it next to the examples and into MLMD, and the
Transform, the Trainer, the exported model and the predict client all read that.

Nothing here knows the synthetic product: it is the generic shape of any tester's program.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable

PROGRAM_FILE = "test_program.json"

# A parametric feature's name: `t{TEST_NUM}` for a PTR, `t{TEST_NUM}_p{RTN_INDX}` for one pin of an
# MPR. The number is the test's identity on a tester; TEST_TXT can be edited between revisions, so
# it is kept for people (the summary, the report), never as a key.
_FEATURE_RE = re.compile(r"^t(\d+)(?:_p(\d+))?$")


def feature_name(number: int, pin: int | None = None) -> str:
    return f"t{number}" if pin is None else f"t{number}_p{pin}"


def is_test_feature(name: str) -> bool:
    """True for a parametric test column (`t1000`, `t200_p3`)."""
    return _FEATURE_RE.match(name) is not None


def parse_feature(name: str) -> tuple[int, int | None]:
    """(TEST_NUM, pin or None) of a test feature name: the inverse of `feature_name`."""
    match = _FEATURE_RE.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a test feature name (t<number> or t<number>_p<pin>)")
    number, pin = match.groups()
    return int(number), None if pin is None else int(pin)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


@dataclasses.dataclass(frozen=True)
class TestDef:
    """One parametric feature: a PTR test, or one pin of an MPR test."""

    __test__ = False  # not a pytest test class

    number: int
    name: str  # TEST_TXT as written by the tester
    units: str = ""
    lo_limit: float | None = None  # in the units RESULT * 10**RES_SCAL is shown in; None: no limit
    hi_limit: float | None = None
    pin: int | None = None  # MPR: the pin's RTN_INDX; None for a PTR
    log_scale: bool = False  # positive and right-skewed (leakage, power): margins on a log scale

    @property
    def feature(self) -> str:
        return feature_name(self.number, self.pin)

    @property
    def kind(self) -> str:
        return "PTR" if self.pin is None else "MPR"

    @property
    def sides(self) -> str:
        """ "both", "lo", "hi" or "none": which limits the test has."""
        lo, hi = self.lo_limit is not None, self.hi_limit is not None
        return {(True, True): "both", (True, False): "lo", (False, True): "hi"}.get((lo, hi), "none")

    def same_definition(self, other: TestDef) -> bool:
        """Same name, units and limits (what a revision can change)."""
        return (
            self.name == other.name
            and self.units == other.units
            and _same(self.lo_limit, other.lo_limit)
            and _same(self.hi_limit, other.hi_limit)
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"feature": self.feature}

    @classmethod
    def from_dict(cls, d: dict) -> TestDef:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


@dataclasses.dataclass(frozen=True)
class Grid:
    """The die grid: what WCR says (sizes in mm, centre die) and the X/Y extent of the dies read.

    Die positions are normalised to a radius of 1 at the wafer's edge: with WCR die sizes and wafer
    size, in mm from the centre die; without them, in dies from the grid's centre, divided by the
    largest such distance seen.
    """

    x_min: int
    x_max: int
    y_min: int
    y_max: int
    diameter_mm: float | None = None  # WCR WAFR_SIZ (converted to mm)
    die_width_mm: float | None = None  # WCR DIE_WID
    die_height_mm: float | None = None  # WCR DIE_HT
    center_x: float | None = None  # WCR CENTER_X / CENTER_Y: the die at the wafer's centre
    center_y: float | None = None
    max_die_radius: float | None = None  # without WCR: largest distance (in dies) from the centre

    @property
    def has_wcr(self) -> bool:
        return bool(self.diameter_mm and self.die_width_mm and self.die_height_mm)

    def centre(self) -> tuple[float, float]:
        if self.center_x is not None and self.center_y is not None:
            return float(self.center_x), float(self.center_y)
        return (self.x_min + self.x_max) / 2.0, (self.y_min + self.y_max) / 2.0

    def radius_scale(self) -> tuple[float, float]:
        """(sx, sy): multiply (x - cx, y - cy) by these to get a radius that is 1 at the edge."""
        if self.has_wcr:
            half = self.diameter_mm / 2.0
            return self.die_width_mm / half, self.die_height_mm / half
        reach = self.max_die_radius or max(self.x_max - self.x_min, self.y_max - self.y_min, 1) / 2.0
        return 1.0 / reach, 1.0 / reach

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


@dataclasses.dataclass
class FileProgram:
    """What one file says about its program; readers attach one to every `WaferRead`."""

    tests: list[TestDef]  # in the order the file first shows them
    good_hard_bins: list[int] | None = None  # from HBR HBIN_PF == "P"; None if the file has no HBR flags
    good_soft_bins: list[int] | None = None
    revision: dict = dataclasses.field(default_factory=dict)  # MIR PART_TYP, JOB_NAM, JOB_REV
    start_time: int = 0  # MIR START_T (else WIR START_T), seconds since 1970: orders retests
    wcr: dict | None = None  # WCR fields in mm: diameter_mm, die_width_mm, die_height_mm, center_x, center_y

    # Parquet schema metadata key holding `to_dict()` as JSON (data/writers.py writes, data/readers.py reads).
    METADATA_KEY = b"waferflow.file_program"

    def to_dict(self) -> dict:
        """JSON-ready: the fields, each test as `TestDef.to_dict()`."""
        return {
            "tests": [t.to_dict() for t in self.tests],
            "good_hard_bins": self.good_hard_bins,
            "good_soft_bins": self.good_soft_bins,
            "revision": self.revision,
            "start_time": self.start_time,
            "wcr": self.wcr,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FileProgram:
        return cls(
            tests=[TestDef.from_dict(t) for t in d.get("tests") or []],
            good_hard_bins=None if d.get("good_hard_bins") is None else [int(b) for b in d["good_hard_bins"]],
            good_soft_bins=None if d.get("good_soft_bins") is None else [int(b) for b in d["good_soft_bins"]],
            revision=dict(d.get("revision") or {}),
            start_time=int(d.get("start_time") or 0),
            wcr=d.get("wcr"),
        )


@dataclasses.dataclass
class TestProgram:
    """The program the ingest learned: union of tests, good bins, grid, revisions and changes."""

    __test__ = False

    tests: list[TestDef]
    good_hard_bins: list[int]
    good_soft_bins: list[int]
    grid: Grid | None
    revisions: list[dict]  # distinct MIR revisions seen, each with the lots that ran it
    changes: list[dict]  # one entry per change between lots (test added / dropped / redefined)
    lots: list[str]

    @property
    def features(self) -> list[str]:
        return [t.feature for t in self.tests]

    def by_feature(self) -> dict[str, TestDef]:
        return {t.feature: t for t in self.tests}

    def to_dict(self) -> dict:
        return {
            "tests": [t.to_dict() for t in self.tests],
            "good_hard_bins": self.good_hard_bins,
            "good_soft_bins": self.good_soft_bins,
            "grid": self.grid.to_dict() if self.grid else None,
            "revisions": self.revisions,
            "changes": self.changes,
            "lots": self.lots,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TestProgram:
        return cls(
            tests=[TestDef.from_dict(t) for t in d["tests"]],
            good_hard_bins=list(d.get("good_hard_bins") or []),
            good_soft_bins=list(d.get("good_soft_bins") or []),
            grid=Grid.from_dict(d["grid"]) if d.get("grid") else None,
            revisions=list(d.get("revisions") or []),
            changes=list(d.get("changes") or []),
            lots=list(d.get("lots") or []),
        )

    @classmethod
    def from_json(cls, text: str) -> TestProgram:
        return cls.from_dict(json.loads(text))


def _sort_key(t: TestDef) -> tuple[int, int]:
    return t.number, -1 if t.pin is None else t.pin


def merge_programs(
    per_lot: dict[str, list[FileProgram]],
    grid_extent: tuple[int, int, int, int] | None,
    max_die_radius: float | None = None,
    log_scale: Iterable[str] = (),
) -> TestProgram:
    """One program from every file's, lot by lot in test-time order.

    The union of tests, each defined as the newest lot (by MIR start time) defines it, so a
    limit that changed means the current limit everywhere; each difference between consecutive
    lots is a change entry (test added, dropped, name / units / limit changed; new revision).
    """
    lots = sorted(per_lot, key=lambda lot: (min((f.start_time for f in per_lot[lot]), default=0), lot))
    latest: dict[str, TestDef] = {}
    changes: list[dict] = []
    revisions: dict[tuple, dict] = {}
    hard: set[int] = set()
    soft: set[int] = set()
    previous: dict[str, TestDef] | None = None
    previous_revision = None
    wcr: dict | None = None
    for lot in lots:
        files = sorted(per_lot[lot], key=lambda f: f.start_time)
        tests: dict[str, TestDef] = {}
        for file in files:
            for test in file.tests:
                tests[test.feature] = test  # a later file of the lot wins
            hard.update(file.good_hard_bins or [])
            soft.update(file.good_soft_bins or [])
            wcr = file.wcr or wcr
            key = tuple(sorted(file.revision.items()))
            revisions.setdefault(key, {**file.revision, "lots": []})
            if lot not in revisions[key]["lots"]:
                revisions[key]["lots"].append(lot)
            if previous_revision is not None and key != previous_revision:
                changes.append({"lot": lot, "change": "revision", "from": dict(previous_revision), "to": dict(key)})
            previous_revision = key
        if previous is not None:
            for feature in sorted(set(tests) - set(previous)):
                changes.append({"lot": lot, "feature": feature, "change": "added"})
            for feature in sorted(set(previous) - set(tests)):
                changes.append({"lot": lot, "feature": feature, "change": "dropped"})
            for feature in sorted(set(tests) & set(previous)):
                old, new = previous[feature], tests[feature]
                if not old.same_definition(new):
                    changes.append(
                        {
                            "lot": lot,
                            "feature": feature,
                            "change": "redefined",
                            "from": _definition(old),
                            "to": _definition(new),
                        }
                    )
        latest.update(tests)
        previous = tests
    # Collapse identical revision changes reported once per file into one per lot.
    changes = [c for i, c in enumerate(changes) if c not in changes[:i]]
    logs = set(log_scale)
    ordered = [dataclasses.replace(t, log_scale=t.feature in logs) for t in sorted(latest.values(), key=_sort_key)]
    grid = None
    if grid_extent is not None:
        x_min, x_max, y_min, y_max = grid_extent
        grid = Grid(x_min=x_min, x_max=x_max, y_min=y_min, y_max=y_max, max_die_radius=max_die_radius, **(wcr or {}))
    return TestProgram(
        tests=ordered,
        good_hard_bins=sorted(hard),
        good_soft_bins=sorted(soft),
        grid=grid,
        revisions=list(revisions.values()),
        changes=changes,
        lots=lots,
    )


def _definition(t: TestDef) -> dict:
    return {"name": t.name, "units": t.units, "lo_limit": t.lo_limit, "hi_limit": t.hi_limit}


# ---------------------------------------------------------------------------------------------
# Which tests get log-scale margins: decided from the sort-passing dies the ingest read.

# Within-wafer skewness above which a positive test is treated as log-normal (leakage, static
# power): a log-normal with sigma 0.1 has skewness 0.3. The mean over a few hundred dies per wafer
# and several wafers puts the noise of a normal test's estimate far below that. A test with a small
# spread relative to its value is nearly linear in its log anyway, so a borderline call costs little.
SKEW_FOR_LOG = 0.3


def _central_skew(v) -> float:
    import numpy as np

    centred = v - v.mean()
    var = float(np.mean(centred**2))
    return float(np.mean(centred**3)) / var**1.5 if var > 0 else 0.0


def test_moments(frame, features: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per test over one wafer's dies: skewness of the values and of their logs (weighted by the
    count, so sums over wafers give a count-weighted mean), the count and how many are <= 0.

    Central moments per wafer are numerically safe whatever the test's offset (a 1 GHz reading
    with a 10 kHz spread); sums combine across wafers by addition, as a Beam combiner needs."""
    import numpy as np

    out = {}
    for name in features:
        if name not in frame:
            continue
        v = frame[name].to_numpy(np.float64)
        v = v[~np.isnan(v)]
        if len(v) < 3:
            continue
        positive = bool((v > 0).all())
        out[name] = {
            "n": float(len(v)),
            "skew_n": _central_skew(v) * len(v),
            "log_skew_n": _central_skew(np.log(v)) * len(v) if positive else 0.0,
            "nonpositive": float((v <= 0).sum()),
        }
    return out


def log_scale_tests(moments: dict[str, dict[str, float]]) -> list[str]:
    """Tests whose values are all positive and right-skewed, and less skewed as logs."""
    chosen = []
    for name, m in sorted(moments.items()):
        if m["n"] < 3 or m["nonpositive"] > 0:
            continue
        skew, log_skew = m["skew_n"] / m["n"], m["log_skew_n"] / m["n"]
        if skew > SKEW_FOR_LOG and abs(log_skew) < skew:
            chosen.append(name)
    return chosen
