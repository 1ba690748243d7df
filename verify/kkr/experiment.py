"""The [KKR25] experiment files: runs per configuration, the paper's tables, and re-certification."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from landscapes.catalog import NONLINEAR_BUILDERS
from landscapes.nonlinear import problems as nl
from landscapes.nonlinear.penalized import PenalizedMinimum, minimize_penalized
from landscapes.nonlinear.problems import NonlinearProblem
from landscapes.nonlinear.restricted import restricted_bounds, restricted_constants
from landscapes.nonlinear.sosp import (
    Factors,
    end_point,
)
from theory.errors import UserInputError, finite_number, shown
from verify.kkr.evidence import Evidence
from verify.kkr.training import (
    DENSE_MAX,
    KKR_FORMAT,
    KKR_INITS,
    KKR_PROBLEMS,
    build_kkr_problem,
    classify,
    end_point_matrices,
    end_point_record,
    frobenius_norm,
    kkr_run,
    kkr_table,
    make_init,
    problem_fingerprint,
    product_change,
    reference_dict,
    same_problem,
    truncated_polished,
)
from verify.results import ResultsFile

__all__ = [
    "kkr_recertify",
    "kkr_experiment",
    "evidence_from_entry",
    "kkr_paper_tables",
    "KKR_RUNS_FORMAT",
    "KKR_TABLES_FORMAT",
    "KKR_RECERTIFIED_FORMAT",
    "KKR_VERSION",
]

#: The formats of ``kkr.json``, of a tables file and of a re-certification file, all at version
#: :data:`KKR_VERSION` (:mod:`verify.results`).  Files written before the ``version`` key spelled
#: them ``loracheck.kkr/1``, ``loracheck.kkr-tables/1`` and ``loracheck.kkr/1-recertified``; they
#: are read (resumed, re-certified, drawn) all the same.
KKR_RUNS_FORMAT = KKR_FORMAT
KKR_TABLES_FORMAT = "loracheck.kkr-tables"
KKR_RECERTIFIED_FORMAT = "loracheck.kkr-recertified"
KKR_VERSION = 1


def evidence_from_entry(entry: Mapping[str, Any], problem: NonlinearProblem) -> Evidence:
    """The :class:`verify.kkr.evidence.Evidence` of one configuration of an experiment file.

    Only the runs of the problem itself: runs of shifted problems (LoRA-GA) belong to other problems.
    """
    from landscapes.nonlinear.restricted import RestrictedBounds, RestrictedConstants

    ref = dict(entry["reference"])
    fields = {k: ref[k] for k in PenalizedMinimum.__dataclass_fields__ if k not in ("X", "U", "V")}
    fields["singular_values"] = tuple(tuple(float(v) for v in sv) for sv in fields["singular_values"])
    fields["ranks"] = tuple(fields["ranks"])
    for k in ("value", "risk", "lower_bound", "stationarity"):
        if isinstance(fields[k], str):
            fields[k] = float(fields[k])
    pm = PenalizedMinimum(X=end_point_matrices(ref, problem), **fields)

    def num(x: Any) -> Any:  # JSON keeps non-finite floats as strings
        if isinstance(x, str) and x in ("nan", "inf", "-inf"):
            return float(x)
        if isinstance(x, dict):
            return {k: num(v) for k, v in x.items()}
        return x

    consts = RestrictedConstants(**num(dict(entry["constants"]))) if entry.get("constants") else None
    b = entry["bounds"]
    bounds = RestrictedBounds(
        float(b["alpha_lower"]),
        float(b["beta_upper"]),
        b["method"],
        radius=None if b.get("radius") is None else float(b["radius"]),
        rank=None if b.get("rank") is None else int(b["rank"]),
    )
    train = KKR_PROBLEMS[entry["problem"]]["train"]
    runs = tuple(r for r in entry["runs"] if not r.get("shifted"))
    wit = entry.get("witnesses")
    return Evidence(
        problem,
        pm,
        runs,
        consts,
        bounds,
        train["rank"],
        float(train["radius"]),
        witnesses={k: float(v) for k, v in wit.items()} if wit else None,
    )


def _verdicts(
    entry: Mapping[str, Any], problem: NonlinearProblem, train: Mapping[str, Any], save_dir: Path
) -> dict[str, Any]:
    from verify.kkr import checkers as kkr

    ev = evidence_from_entry(entry, problem)
    out = {}
    for claim, f in (
        ("KKR-special", kkr.check_kkr_special),
        ("KKR-dichotomy", kkr.check_kkr_dichotomy),
        ("KKR-loud", kkr.check_kkr_loud),
        ("KKR-magnitude", kkr.check_kkr_magnitude),
        ("KKR-bias", kkr.check_kkr_bias),
    ):
        out[claim] = f(ev, save_dir=save_dir).to_dict()
    return out


def _bounds(problem: NonlinearProblem, entry: Mapping[str, Any], train: Mapping[str, Any]) -> dict[str, Any]:
    """Structural bounds on the restricted constants at the LoRA rank and radius about the reference."""
    return restricted_bounds(
        problem,
        x_star=end_point_matrices(entry["reference"], problem),
        radius=float(train["radius"]),
        rank=int(train["rank"]),
    ).to_dict()


def _ensure_constants(
    entry: dict[str, Any],
    problem: NonlinearProblem,
    train: Mapping[str, Any],
    samples: int,
    save: Callable[[], None],
) -> None:
    """Restricted constants about the entry's current reference (recomputed when the reference changed)."""
    about = entry.get("constants_about_reference_value")
    value = float(entry["reference"]["value"])
    stale = (about is None and "reference_refined_from_run" in entry) or (
        about is not None and float(about) != value
    )
    if stale:
        entry.pop("constants", None)
        # Bounds from structure about X* (generalized-linear sensing) move with the reference too.
        entry["bounds"] = _bounds(problem, entry, train)
    if "constants" not in entry and train["rank"] >= entry["reference"]["rank"]:
        entry["constants"] = restricted_constants(
            problem,
            rank=train["rank"],
            radius=train["radius"],
            x_star=end_point_matrices(entry["reference"], problem),
            samples=min(samples, train.get("max_samples", samples)),
        ).to_dict()
        entry["constants_about_reference_value"] = value
        entry.pop("witnesses", None)
        if train.get("witnesses"):
            from landscapes.nonlinear.restricted import restricted_witnesses

            w = restricted_witnesses(
                problem,
                rank=train["rank"],
                radius=float(train["radius"]),
                x_star=end_point_matrices(entry["reference"], problem),
            )
            entry["witnesses"] = {
                "alpha_upper": w.alpha_upper,
                "beta_lower": w.beta_lower,
                "rho_upper": w.rho_upper,
            }
        save()


def _save_to(file: ResultsFile, data: Any) -> Callable[[], None]:
    """A function that writes ``data`` to ``file`` (atomically), as it is when called."""
    from verify.verdict import jsonable

    def save() -> None:
        file.save(jsonable(data))

    return save


def _kkr_file(
    path: Path, what: str = "out", hint: str = "choose another path or fresh (--fresh)"
) -> ResultsFile:
    """A ``kkr.json`` (:func:`kkr_experiment`), named ``what`` in errors."""
    return ResultsFile(
        path, fmt=KKR_RUNS_FORMAT, version=KKR_VERSION, what=what, noun="a readable KKR file", hint=hint
    )


def _check_grid(
    problems: Sequence[str],
    inits: Sequence[str],
    seeds: Sequence[int],
    lams: Sequence[float] | None,
    samples: int,
) -> None:
    """Refuse the grid of :func:`kkr_experiment` when an argument is out of range, naming the first."""
    for name in problems:
        if name not in KKR_PROBLEMS:
            raise UserInputError(f"problems: expected names from {', '.join(KKR_PROBLEMS)}, got {name!r}")
    for name in inits:
        if name not in KKR_INITS:
            raise UserInputError(f"inits: expected names from {KKR_INITS}, got {name!r}")
    if "adversarial" in inits:
        plain = [n for n in problems if KKR_PROBLEMS[n]["builder"] != "spurious_sensing"]
        if plain:
            raise UserInputError(
                f"inits: 'adversarial' needs problems with a designed start (spurious-*), got {plain}"
            )
    if not seeds or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds):
        raise UserInputError(f"seeds: expected a non-empty sequence of ints, got {list(seeds)!r}")
    if len(set(seeds)) != len(seeds) or len(set(inits)) != len(inits):
        raise UserInputError(f"seeds, inits: expected no repeats, got {list(seeds)!r} and {list(inits)!r}")
    if lams is not None and (
        not lams or any(not (isinstance(x, (int, float)) and 0 <= x < math.inf) for x in lams)
    ):
        raise UserInputError(f"lams: expected finite weight decays >= 0, got {list(lams)!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserInputError(f"samples: expected a positive int, got {samples!r}")


def _experiment_data(file: ResultsFile, config: Mapping[str, Any], fresh: bool) -> dict[str, Any]:
    """The data of an experiment file: resumed from ``file`` when it holds ``config``'s runs, else new."""
    data = file.load(
        file.new(config=config, configurations={}, complete=False),
        identity=("config",),
        fresh=fresh,
        contents="runs",
        upgrade=_without_notes,
        check=_check_kkr_data,
    )
    data["complete"] = False
    return data


def _without_notes(data: dict[str, Any]) -> None:
    """Files of earlier versions kept the problems' notes in the configuration: dropped (in place)."""
    config = data.get("config")
    problems = config.get("problems") if isinstance(config, dict) else None
    for spec in problems.values() if isinstance(problems, dict) else ():
        if isinstance(spec, dict):
            spec.pop("note", None)


def _beats(value: float, reference_value: float) -> bool:
    """A penalized value below the reference's beyond round-off: the reference is refined from it."""
    return value < reference_value - 1e-12 * max(1.0, abs(reference_value))


def _offset_hash(offset: Sequence[torch.Tensor]) -> str:
    """The key of a LoRA-GA weight offset (its shifted problem) among the shifted references."""
    rounded = [[round(v, 12) for v in o.reshape(-1).tolist()] for o in offset]
    return hashlib.sha256(json.dumps(rounded).encode()).hexdigest()[:16]


def _configuration_run(
    problem: NonlinearProblem,
    train: Mapping[str, Any],
    entry: Mapping[str, Any],
    shifted_refs: dict[str, dict[str, Any]],
    init: str,
    seed: int,
    ref_norm: float,
) -> dict[str, Any]:
    """One run of a configuration; a LoRA-GA init trains its shifted problem (its reference added)."""
    start, offset = make_init(problem, init, rank=train["rank"], seed=seed, reference_norm=ref_norm)
    target = problem
    ref_value = float(entry["reference"]["value"])
    oh = None
    if offset is not None:
        target = nl.shifted(problem, offset)
        oh = _offset_hash(offset)
        if oh not in shifted_refs:
            shifted_refs[oh] = reference_dict(
                minimize_penalized(target, max_iter=train.get("reference_iter", 5000))
            )
        ref_value = float(shifted_refs[oh]["value"])
    run = kkr_run(
        target,
        start,
        steps=train["steps"],
        lr=train["lr"],
        polish=train.get("polish", 3000),
        lanczos_maxiter=train.get("lanczos_maxiter"),
        truncate=bool(train.get("truncate", False)),
        dense_max=int(train.get("dense_max", DENSE_MAX)),
    )
    run.update(init=init, seed=seed, reference_value=ref_value, shifted=offset is not None)
    if oh is not None:
        run.update(shifted_reference=oh, reference_rank=int(shifted_refs[oh]["rank"]))
    return run


def _refine_references(
    entry: dict[str, Any],
    problem: NonlinearProblem,
    train: Mapping[str, Any],
    shifted_refs: dict[str, dict[str, Any]],
    ref_norm: float,
) -> None:
    """A run that beats its reference refines it (non-convex risks): its runs are then judged against it.

    The base reference from the best run of the problem itself; each shifted problem's (LoRA-GA)
    from the best run of its own.
    """
    best = min(
        (r for r in entry["runs"] if r.get("status") == "finished" and not r.get("shifted")),
        key=lambda r: r["penalized"],
        default=None,
    )
    if best is not None and _beats(best["penalized"], float(entry["reference"]["value"])):
        better = minimize_penalized(
            problem,
            starts={"best-run": end_point_matrices(best, problem)},
            max_iter=train.get("reference_iter", 5000),
        )
        entry["reference_refined_from_run"] = {"init": best["init"], "seed": best["seed"]}
        entry["reference"] = reference_dict(better)
        for r in entry["runs"]:
            if not r.get("shifted"):
                r["reference_value"] = better.value
    for oh, sref in shifted_refs.items():
        mine = [
            r for r in entry["runs"] if r.get("shifted_reference") == oh and r.get("status") == "finished"
        ]
        low = min(mine, key=lambda r: r["penalized"], default=None)
        if low is None or not _beats(low["penalized"], float(sref["value"])):
            continue
        _, offset = make_init(
            problem, low["init"], rank=train["rank"], seed=low["seed"], reference_norm=ref_norm
        )
        assert offset is not None
        target = nl.shifted(problem, offset)
        better = minimize_penalized(
            target,
            starts={"best-run": end_point_matrices(low, target)},
            max_iter=train.get("reference_iter", 5000),
        )
        shifted_refs[oh] = dict(reference_dict(better), refined_from_run=[low["init"], low["seed"]])
        for r in mine:
            r["reference_value"] = better.value
            r["reference_rank"] = better.rank


def _run_configuration(
    data: dict[str, Any],
    key: str,
    pname: str,
    lam: float | None,
    grid: tuple[Sequence[str], Sequence[int], int],
    path: Path,
    save: Callable[[], None],
    bar: Any,
) -> None:
    """The runs of one configuration not in the file yet, its references, constants, table and verdicts.

    ``grid``: the inits, the seeds and the number of samples of the constants.
    """
    inits, seeds, samples = grid
    spec = KKR_PROBLEMS[pname]
    kwargs = dict(spec["kwargs"])
    if lam is not None:
        kwargs["lam"] = lam
    entry = data["configurations"].setdefault(key, {"problem": pname, "runs": []})
    done = {(r["init"], r["seed"]) for r in entry["runs"]}
    todo = [(i, s) for i in inits for s in seeds if (i, s) not in done]
    bar.update(len(done))
    problem = NONLINEAR_BUILDERS[spec["builder"]](**kwargs)
    train = spec["train"]
    fp = problem_fingerprint(problem)
    if entry.get("fingerprint") is not None and not same_problem(entry["fingerprint"], fp):
        raise UserInputError(f"out: {str(path)!r} holds runs of another {key} problem; use fresh")
    entry["fingerprint"] = fp
    if "reference" not in entry:
        bar.set_postfix_str(f"{key}: reference")
        entry["reference"] = reference_dict(
            minimize_penalized(problem, max_iter=train.get("reference_iter", 5000))
        )
        entry["bounds"] = _bounds(problem, entry, train)
        save()
    ref_norm = frobenius_norm(end_point_matrices(entry["reference"], problem))

    _ensure_constants(entry, problem, train, samples, save)
    shifted_refs: dict[str, dict[str, Any]] = entry.setdefault("shifted_references", {})
    skipped = entry.setdefault("skipped", {})
    if "loraga" in inits and 2 * train["rank"] > min(min(b) for b in problem.blocks):
        skipped["loraga"] = f"LoRA-GA needs 2 r <= min(m, n); r = {train['rank']}, blocks {problem.blocks}"
    for init, seed in todo:
        if init in skipped:
            bar.update(1)
            continue
        bar.set_postfix_str(f"{key}: {init} seed {seed}")
        entry["runs"].append(_configuration_run(problem, train, entry, shifted_refs, init, seed, ref_norm))
        save()
        bar.update(1)
    _refine_references(entry, problem, train, shifted_refs, ref_norm)
    # Every run knows its LoRA rank and its reference's rank (files of earlier versions
    # lack them for shifted runs: their offset is the one shifted reference, when unique).
    for r in entry["runs"]:
        r.setdefault("lora_rank", train["rank"])
        if r.get("shifted") and "reference_rank" not in r and len(shifted_refs) == 1:
            r["reference_rank"] = int(next(iter(shifted_refs.values()))["rank"])
        if not r.get("shifted"):
            r["reference_rank"] = int(entry["reference"]["rank"])
    _ensure_constants(entry, problem, train, samples, save)
    entry["table"] = kkr_table(
        entry["runs"],
        entry["reference"],
        depth=max(problem.value(problem.zeros()) - float(entry["reference"]["value"]), 0.0),
    )
    # A violated verdict saves its end points next to the file (counterexamples/).
    entry["verdicts"] = _verdicts(entry, problem, train, path.parent / "counterexamples")
    save()


def kkr_experiment(
    problems: Sequence[str],
    *,
    out: str | Path,
    inits: Sequence[str] = ("zero", "small", "large"),
    seeds: Sequence[int] = tuple(range(10)),
    lams: Sequence[float] | None = None,
    samples: int = 200,
    fresh: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run every (problem, lam, init, seed) of the grid and write ``out`` (JSON, atomically, after every run).

    ``lams`` overrides the problems' weight decay (one configuration per value; ``0`` is
    allowed: "no decay").  Per configuration the file holds the reference minimum, the
    restricted constants about it (``samples`` Monte-Carlo samples at the problem's rank and
    radius, plus the structural bounds), the runs and :func:`kkr_table`.  Re-running with the
    same arguments resumes an interrupted file; ``fresh`` starts over.
    """
    from tqdm.auto import tqdm

    from verify.verdict import jsonable

    _check_grid(problems, inits, seeds, lams, samples)
    config = {
        # What makes the runs (the notes are for people and may change).
        "problems": {n: {k: v for k, v in KKR_PROBLEMS[n].items() if k != "note"} for n in problems},
        "inits": list(inits),
        "seeds": list(seeds),
        "lams": None if lams is None else [float(x) for x in lams],
        "samples": samples,
    }
    path = Path(out)
    file = _kkr_file(path)
    data = _experiment_data(file, jsonable(config), fresh)
    save = _save_to(file, data)
    t_start = time.perf_counter()
    lam_list: list[float | None] = [None] if lams is None else [float(x) for x in lams]
    total = len(problems) * len(lam_list) * len(inits) * len(seeds)
    bar = tqdm(total=total, desc="kkr", unit="run", disable=None if progress is None else not progress)
    try:
        for pname in problems:
            for lam in lam_list:
                key = pname if lam is None else f"{pname}@lam={lam!r}"
                _run_configuration(data, key, pname, lam, (inits, seeds, samples), path, save, bar)
    finally:
        bar.close()
    data["complete"] = True
    data["seconds"] = data.get("seconds", 0.0) + time.perf_counter() - t_start
    save()
    return data


def _check_table_row(table: str, row: Mapping[str, Any], at: str) -> None:
    """The printed fields of a resumed table row: ``UserInputError`` naming the first bad one."""
    if table == "table2" and "skipped" in row:
        _need(isinstance(row["skipped"], str), f"{at}['skipped']", "a str (why)", row["skipped"])
        return
    numbers = ("nuclear", "frobenius", "risk") if table == "table1" else ("alpha", "beta")
    for k in numbers:
        _need(finite_number(row.get(k)), f"{at}[{k!r}]", "a finite number", row.get(k))
    if table == "table1":
        rank, t = row.get("rank"), row.get("test_risk")
        _need(isinstance(rank, int) and not isinstance(rank, bool), f"{at}['rank']", "an int", rank)
        # a test risk that was not finite is written as the string 'nan' or 'inf'
        _need(finite_number(t) or t in ("nan", "inf", "-inf"), f"{at}['test_risk']", "a number", t)
        _need(isinstance(row.get("method"), str), f"{at}['method']", "a str", row.get("method"))
    else:
        _need(row["beta"] > 0, f"{at}['beta']", "a number > 0", row["beta"])
        _need(isinstance(row.get("regime"), str), f"{at}['regime']", "a str", row.get("regime"))
    _need(isinstance(row.get("certified"), bool), f"{at}['certified']", "true or false", row.get("certified"))


def _check_tables(data: Mapping[str, Any], where: str) -> None:
    """The rows of a resumed tables file: what a resumed run reads back and prints."""
    for table, key in (("table1", "lam"), ("table2", "rank")):
        rows: Any = data.get(table)
        _need(isinstance(rows, list), f"{where}: {table!r}", "a list of rows", rows)
        for i, row in enumerate(rows):
            at = f"{where}: {table}[{i}]"
            _need(isinstance(row, Mapping), at, "a JSON object (a row)", row)
            v = row.get(key)
            ok = isinstance(v, int) and not isinstance(v, bool) if key == "rank" else finite_number(v)
            _need(ok, f"{at}[{key!r}]", "an int" if key == "rank" else "a finite number", v)
            _check_table_row(table, row, at)  # the fields `loracheck kkr --tables` prints


def _table1_row(spec: Mapping[str, Any], lam: float, max_iter: int) -> dict[str, Any]:
    """Table 1's row of a weight decay: the rank, norms and risks of the penalized minimizer."""
    p = NONLINEAR_BUILDERS[spec["builder"]](**dict(spec["kwargs"], lam=float(lam)))
    ref = minimize_penalized(p, max_iter=max_iter)
    return {
        "lam": float(lam),
        "rank": ref.rank,
        "ranks": ref.ranks,
        "nuclear": sum(sum(sv) for sv in ref.singular_values),
        "frobenius": ref.frobenius,
        "value": ref.value,
        "risk": ref.risk,
        "certified": ref.certified,
        "method": ref.method,
        "test_risk": p.test_value(ref.X),
        "top_singular_values": [list(sv[:20]) for sv in ref.singular_values],
    }


def _table2_rows(
    data: dict[str, Any],
    spec: Mapping[str, Any],
    ranks: Sequence[int],
    radius: float,
    samples: int,
    max_iter: int,
    save: Callable[[], None],
    bar: Any,
) -> None:
    """Table 2's rows not in ``data`` yet: the sampled constants per LoRA rank (a skipped rank says why)."""
    done2 = {int(r["rank"]) for r in data["table2"]}
    bar.update(len(done2))
    if all(int(r) in done2 for r in ranks):
        return
    p = NONLINEAR_BUILDERS[spec["builder"]](**spec["kwargs"])
    ref = minimize_penalized(p, max_iter=max_iter)
    for r in ranks:
        if int(r) in done2:
            continue
        small = min(min(b) for b in p.blocks)
        if r < ref.rank or r > small:
            why = f"r < r* = {ref.rank}" if r < ref.rank else f"r > min(m, n) = {small}"
            data["table2"].append({"rank": r, "skipped": why})
        else:
            c = restricted_constants(p, rank=r, radius=radius, x_star=ref.X, samples=samples)
            data["table2"].append(dict(c.to_dict(), r_star=ref.rank))
        save()
        bar.update(1)


def kkr_paper_tables(
    problem_name: str,
    *,
    out: str | Path,
    lams: Sequence[float] = (1e-1, 1e-2, 1e-3, 1e-4),
    ranks: Sequence[int] = (2, 4, 8, 16),
    radius: float | None = None,
    samples: int = 100,
    fresh: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    r"""[KKR25]'s Tables 1 and 2 in shape, on one named problem; written to ``out`` (JSON) row by row.

    Table 1: the rank (and norm) of the penalized minimizer per weight decay in ``lams``
    (certified for convex risks, the best point found otherwise).  Table 2: Monte-Carlo
    :math:`\hat\alpha`, :math:`\hat\beta` at each LoRA rank in ``ranks`` (radius ``radius``,
    default the configuration's), about the minimizer at the configuration's own weight decay.
    An existing file of the same arguments is resumed; one of other arguments is refused unless
    ``fresh``.
    """
    from tqdm.auto import tqdm

    from verify.verdict import jsonable

    if problem_name not in KKR_PROBLEMS:
        raise UserInputError(f"problem: expected one of {', '.join(KKR_PROBLEMS)}, got {problem_name!r}")
    if not lams or any(not (isinstance(x, (int, float)) and 0 < x < math.inf) for x in lams):
        raise UserInputError(f"lams: expected positive weight decays, got {list(lams)!r}")
    if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
        raise UserInputError(f"ranks: expected positive ints, got {list(ranks)!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserInputError(f"samples: expected a positive int, got {samples!r}")
    if radius is not None and not (isinstance(radius, (int, float)) and 0 < radius < math.inf):
        raise UserInputError(f"radius: expected None or a positive finite number, got {radius!r}")
    spec = KKR_PROBLEMS[problem_name]
    train = spec["train"]
    D = float(radius if radius is not None else train["radius"])
    config = {
        "problem": problem_name,
        "lams": list(lams),
        "ranks": list(ranks),
        "radius": D,
        "samples": samples,
    }
    file = ResultsFile(
        out, fmt=KKR_TABLES_FORMAT, version=KKR_VERSION, noun="a tables file", hint="use fresh (--fresh)"
    )
    new = file.new(config=jsonable(config), table1=[], table2=[])
    data = file.load(new, identity=("config",), fresh=fresh, contents="tables", check=_check_tables)
    save = _save_to(file, data)
    it_max = train.get("reference_iter", 5000)
    bar = tqdm(
        total=len(lams) + len(ranks), desc="kkr tables", disable=None if progress is None else not progress
    )
    try:
        done1 = {float(r["lam"]) for r in data["table1"]}
        bar.update(len(done1))
        for lam in lams:
            if float(lam) in done1:
                continue
            data["table1"].append(_table1_row(spec, lam, it_max))
            save()
            bar.update(1)
        _table2_rows(data, spec, ranks, D, samples, it_max, save, bar)
    finally:
        bar.close()
    save()
    return data


def _need(ok: bool, where: str, expected: str, value: Any) -> None:
    if not ok:
        raise UserInputError(f"{where}: expected {expected}, got {shown(value)}")


def _check_matrices(value: Any, where: str) -> None:
    """A list of matrices: each a non-empty list of equally long lists of finite numbers."""
    _need(isinstance(value, list), where, "a list of matrices", value)
    for j, m in enumerate(value):
        at = f"{where}[{j}]"
        _need(isinstance(m, list), at, "a matrix (a list of rows)", m)
        for i, row in enumerate(m):
            _need(
                isinstance(row, list) and all(finite_number(x) for x in row),
                f"{at}[{i}]",
                "a row of finite numbers",
                row,
            )
            _need(len(row) == len(m[0]), f"{at}[{i}]", f"a row of length {len(m[0])}", row)


def _check_kkr_run(run: Any, where: str) -> None:
    """The fields of one saved run that the table, the verdicts and re-certification read."""
    _need(isinstance(run, Mapping), where, "a JSON object (a run)", run)
    _need(isinstance(run.get("init"), str), f"{where}['init']", "a str", run.get("init"))
    seed = run.get("seed")
    _need(isinstance(seed, int) and not isinstance(seed, bool), f"{where}['seed']", "an int", seed)
    _need(isinstance(run.get("status"), (str, type(None))), f"{where}['status']", "a str", run.get("status"))
    for k in ("reference_rank", "lora_rank"):
        if k in run:
            v = run[k]
            ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1 << 53
            _need(ok, f"{where}[{k!r}]", "an int in [0, 2**53]", v)
    if run.get("status") != "finished":
        return
    for k in ("penalized", "reference_value", "frobenius"):
        if k in run or k == "penalized":
            _need(finite_number(run.get(k)), f"{where}[{k!r}]", "a finite number", run.get(k))
    for k in ("A", "B"):
        if k in run:
            _check_matrices(run[k], f"{where}[{k!r}]")


def _check_kkr_data(data: Mapping[str, Any], where: str) -> None:
    """Refuse a ``kkr.json`` whose structure is not what :func:`kkr_experiment` writes.

    Saved results handed back in are input (they may be forged or damaged): the fields that the
    readers here walk are checked before any of them is used.
    """
    config = data.get("config")
    _need(isinstance(config, (Mapping, type(None))), f"{where}: 'config'", "a JSON object", config)
    if isinstance(config, Mapping):
        probs = config.get("problems")
        _need(
            isinstance(probs, (Mapping, type(None))), f"{where}: 'config' 'problems'", "a JSON object", probs
        )
    confs = data.get("configurations")
    _need(isinstance(confs, (Mapping, type(None))), f"{where}: 'configurations'", "a JSON object", confs)
    for name, entry in (confs or {}).items():
        at = f"{where}: configuration {shown(name)}"
        _need(isinstance(entry, Mapping), at, "a JSON object", entry)
        _need(isinstance(entry.get("problem"), str), f"{at}: 'problem'", "a str", entry.get("problem"))
        runs = entry.get("runs")
        _need(isinstance(runs, list), f"{at}: 'runs'", "a list of runs", runs)
        for i, run in enumerate(runs):
            _check_kkr_run(run, f"{at}: runs[{i}]")
        for k in ("fingerprint", "reference", "bounds", "table", "verdicts", "witnesses"):
            v = entry.get(k)
            _need(isinstance(v, (Mapping, type(None))), f"{at}: {k!r}", "a JSON object", v)
        _need(
            isinstance(entry.get("constants"), (Mapping, type(None))),
            f"{at}: 'constants'",
            "a JSON object or null",
            entry.get("constants"),
        )
        fp = entry.get("fingerprint") or {}
        if "probe_value" in fp:
            pv = fp["probe_value"]
            ok = finite_number(pv) or (isinstance(pv, str) and pv in ("nan", "inf", "-inf"))
            _need(ok, f"{at}: 'fingerprint' 'probe_value'", "a number", pv)
        ref = entry.get("reference")
        if ref is not None:
            _need(
                finite_number(ref.get("value")),
                f"{at}: 'reference' 'value'",
                "a finite number",
                ref.get("value"),
            )
            if "frobenius" in ref:
                fr = ref["frobenius"]
                _need(finite_number(fr), f"{at}: 'reference' 'frobenius'", "a finite number", fr)
        for k, v in (entry.get("witnesses") or {}).items():
            _need(finite_number(v), f"{at}: 'witnesses' {shown(k)}", "a finite number", v)


def _read_kkr(path: Path, arg: str) -> dict[str, Any]:
    """The parsed ``kkr.json`` at ``path``; a ``ValueError`` naming ``arg`` when it is not one."""
    data = _kkr_file(path, arg, hint="").read()
    _check_kkr_data(data, f"{arg}: {str(path)!r}")
    return data


def _json_number(value: Any) -> bool:
    """A finite number, or a non-finite float as this file writes it (a string: nan, inf, -inf)."""
    return finite_number(value) or (isinstance(value, str) and value in ("nan", "inf", "-inf"))


def _check_evidence_fields(entry: Mapping[str, Any], where: str) -> None:
    """The reference, bounds and constants that :func:`evidence_from_entry` rebuilds its objects from."""
    import inspect

    from landscapes.nonlinear.restricted import RestrictedConstants

    ref = entry["reference"]
    at = f"{where}: 'reference'"
    for k in PenalizedMinimum.__dataclass_fields__:
        if k != "X" and k not in ref:
            raise UserInputError(f"{at}: missing {k!r}")
    for k in ("value", "risk", "lower_bound", "stationarity"):
        _need(_json_number(ref[k]), f"{at} {k!r}", "a number", ref[k])
    svs = ref["singular_values"]
    ok = isinstance(svs, list) and all(
        isinstance(sv, list) and all(_json_number(v) for v in sv) for sv in svs
    )
    _need(ok, f"{at} 'singular_values'", "a list of lists of numbers", svs)
    ranks = ref["ranks"]
    ok = isinstance(ranks, list) and all(isinstance(r, int) and not isinstance(r, bool) for r in ranks)
    _need(ok, f"{at} 'ranks'", "a list of ints", ranks)
    for k in ("U", "V") if "U" in ref else ("X",):
        if k not in ref:
            raise UserInputError(f"{at}: missing {k!r}")
        _check_matrices(ref[k], f"{at} {k!r}")
    b: Any = entry.get("bounds")
    _need(isinstance(b, Mapping), f"{where}: 'bounds'", "a JSON object", b)
    for k in ("alpha_lower", "beta_upper"):
        _need(_json_number(b.get(k)), f"{where}: 'bounds' {k!r}", "a number", b.get(k))
    _need(isinstance(b.get("method"), str), f"{where}: 'bounds' 'method'", "a str", b.get("method"))
    for k in ("radius", "rank"):
        v = b.get(k)
        ok = v is None or (finite_number(v) and (k == "radius" or isinstance(v, int)))
        _need(ok, f"{where}: 'bounds' {k!r}", "a number or null", v)
    consts = entry.get("constants")
    if consts:
        try:
            inspect.signature(RestrictedConstants).bind(**consts)
        except TypeError as exc:
            raise UserInputError(
                f"{where}: 'constants': expected the fields of the restricted constants ({exc})"
            ) from None


def _check_factors_shape(run: Mapping[str, Any], problem: NonlinearProblem, where: str) -> None:
    """The factors ``A``, ``B`` of a run: one ``m x r`` and one ``n x r`` matrix per block of ``problem``."""
    for k in ("A", "B"):
        if k not in run:
            raise UserInputError(f"{where}: missing the factors {k!r}")
        _check_matrices(run[k], f"{where}[{k!r}]")
    A, B = run["A"], run["B"]
    blocks = list(problem.blocks)
    _need(len(A) == len(B) == len(blocks), f"{where}['A']", f"{len(blocks)} matrices (one per block)", A)
    for j, (a, b, (m, n)) in enumerate(zip(A, B, blocks)):
        cols = {len(row) for row in a} | {len(row) for row in b}
        ok = len(a) == m and len(b) == n and len(cols) == 1 and cols != {0}
        _need(ok, f"{where}['A'][{j}], ['B'][{j}]", f"a {m} x r and a {n} x r matrix (r >= 1)", [a, b])


def _factors(d: Mapping[str, Any], problem: NonlinearProblem) -> Factors:
    """The factors ``A``, ``B`` stored in ``d`` as tensors of the problem's dtype and device."""
    dt, dev = problem.dtype, problem.device
    return Factors(
        tuple(torch.tensor(a, dtype=dt, device=dev) for a in d["A"]),
        tuple(torch.tensor(b, dtype=dt, device=dev) for b in d["B"]),
    )


def recertified_runs(
    entry: Mapping[str, Any], recertified: Mapping[str, Any], problem: NonlinearProblem
) -> list[dict[str, Any]]:
    """The runs of a ``kkr.json`` configuration with the re-certified end points in place of the saved ones.

    A re-certified run keeps its init, seed, start and training curve and takes the new end
    point's numbers and factors (in the format of :func:`kkr_run`), with ``recertified=True``,
    ``truncated=True``, ``truncation_change`` (the move of :math:`X` by truncation and polish) and
    ``saved_class`` (the saved end point's class).
    """
    new = {(r["init"], r["seed"]): r for r in recertified["runs"]}
    out = []
    for r in entry["runs"]:
        n = new.get((r["init"], r["seed"]))
        if n is None:
            out.append(dict(r))
            continue
        rec = dict(r)
        rec.update(end_point_record(problem, n["end_point"], _factors(n, problem)))
        rec.update(
            recertified=True,
            truncated=True,
            truncation_change=n["change_frobenius"],
            saved_class=n["saved_class"],
            recertify_seconds=n["seconds"],
        )
        out.append(rec)
    return out


#: Version of the table and verdicts that :func:`kkr_recertify` stores (part of their ``basis``).
_RECERTIFIED_TABLE_VERSION = 1


def _recertify_source(
    src: Path, runs: Sequence[tuple[str, int]], configuration: str | None
) -> tuple[str, dict[str, Any], dict[tuple[str, int], dict[str, Any]]]:
    """The configuration of ``src`` to re-certify: its key, its entry and its finished runs by (init, seed).

    Refused unless it is a named problem at its own weight decay and ``runs`` are finished runs of
    it without a weight offset.
    """
    data = _read_kkr(src, "source")
    confs = data.get("configurations") or {}
    key = configuration if configuration is not None else (next(iter(confs)) if len(confs) == 1 else None)
    if key is None or key not in confs:
        raise UserInputError(f"configuration: expected one of {sorted(confs)}, got {key!r}")
    entry = confs[key]
    ref_d = entry.get("reference")
    _need(isinstance(ref_d, Mapping), f"source: configuration {key!r}: 'reference'", "a JSON object", ref_d)
    if "@lam=" in key or entry.get("problem") not in KKR_PROBLEMS:
        raise UserInputError(f"configuration: expected a named problem at its own weight decay, got {key!r}")
    finished = {(r["init"], r["seed"]): r for r in entry["runs"] if r.get("status") == "finished"}
    missing = [w for w in runs if tuple(w) not in finished]
    if not runs or missing:
        raise UserInputError(f"runs: expected finished (init, seed) runs of {key!r}, got {list(runs)!r}")
    shifted = [w for w in runs if finished[tuple(w)].get("shifted")]  # type: ignore[index]
    if shifted:  # their factors belong to the shifted problem of their LoRA-GA offset
        raise UserInputError(f"runs: runs with a weight offset (LoRA-GA) are not supported, got {shifted!r}")
    return key, entry, finished


def _check_recertified_runs(data: Mapping[str, Any], where: str) -> None:
    """The runs of a re-certification file that a re-run reads back."""
    old_runs = data.get("runs")
    if not isinstance(old_runs, list):
        raise UserInputError(f"{where}: 'runs': expected a list of runs, got {shown(old_runs)}")
    for i, r in enumerate(old_runs):
        at = f"{where}: runs[{i}]"
        _need(isinstance(r, Mapping), at, "a JSON object (a run)", r)
        _need(isinstance(r.get("init"), str), f"{at}['init']", "a str", r.get("init"))
        sd = r.get("seed")
        _need(isinstance(sd, int) and not isinstance(sd, bool), f"{at}['seed']", "an int", sd)
        _need(
            isinstance(r.get("end_point"), Mapping), f"{at}['end_point']", "a JSON object", r.get("end_point")
        )
        change = r.get("change_frobenius")
        _need(finite_number(change), f"{at}['change_frobenius']", "a number", change)
        _need(finite_number(r.get("seconds")), f"{at}['seconds']", "a number", r.get("seconds"))


def _run_sha256(run: Mapping[str, Any]) -> str:
    """A sha256 of a source run's saved record (what its re-certification was computed from)."""
    return hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()


def _recertified_run(
    problem: NonlinearProblem,
    init: str,
    seed: int,
    run: Mapping[str, Any],
    ref_value: float,
    depth: float,
    *,
    dense_max: int,
    polish: int,
    grad_tol: float,
    rank_rtol: float,
) -> dict[str, Any]:
    """A saved end point truncated, polished and classified again: a run of the re-certification file."""
    t0 = time.perf_counter()
    saved = _factors(run, problem)
    pt = truncated_polished(problem, saved, rank_rtol=rank_rtol, max_iter=polish, grad_tol=grad_tol)
    ep = end_point(problem, pt, rank_rtol=rank_rtol, dense_max=dense_max)
    judged = {
        "status": "finished",
        "sosp": ep.sosp,
        "penalized": ep.penalized,
        "reference_rank": run.get("reference_rank", 0),
        "lora_rank": run.get("lora_rank", 1 << 30),
    }
    saved_keys = (
        "penalized",
        "grad_norm",
        "lambda_min",
        "lambda_min_residual",
        "lambda_min_converged",
        "sosp",
    )
    return {
        "init": init,
        "seed": seed,
        "saved": {k: run.get(k) for k in saved_keys},
        "saved_class": classify(run, float(run.get("reference_value", ref_value)), depth=depth),
        "change_frobenius": product_change(saved, pt),
        "end_point": ep.to_dict(),
        "class": classify(judged, ref_value, depth=depth),
        "reference_value": ref_value,
        "seconds": time.perf_counter() - t0,
        "A": [a.detach().cpu().tolist() for a in pt.A],
        "B": [b.detach().cpu().tolist() for b in pt.B],
    }


def kkr_recertify(
    source: str | Path,
    runs: Sequence[tuple[str, int]],
    *,
    out: str | Path,
    configuration: str | None = None,
    dense_max: int = 4000,
    polish: int = 200,
    grad_tol: float = 1e-10,
    rank_rtol: float = 1e-6,
    fresh: bool = False,
) -> dict[str, Any]:
    r"""Re-certify saved end points of a ``kkr.json`` with the zero-column splitting of the Hessian.

    For each ``(init, seed)``: the saved factors are truncated to their numerical rank
    (:func:`~landscapes.nonlinear.sosp.truncate_factors`: balanced, trailing columns exactly
    zero), polished by L-BFGS on the non-zero columns only
    (:func:`~landscapes.nonlinear.sosp.polish_nonzero_columns`) and classified by
    :func:`~landscapes.nonlinear.sosp.end_point` with ``dense_max``: the zero columns' part of
    :math:`\lambda_{\min}` in closed form, the reduced point's from its dense Hessian (one HVP per
    parameter, then ``eigh``: a rigorous lower bound up to round-off) when it has at most
    ``dense_max`` parameters, else from Lanczos.  This is the route for the real MiniLM without
    linearization, where Lanczos on the whole Hessian does not converge in an affordable number of
    HVPs.  ``out`` (JSON) is rewritten atomically after every run; a re-run skips finished runs
    whose source run is unchanged (``fresh``: starts over), and when it adds none and the source
    configuration is unchanged (``basis``: a sha256 of it) it returns the stored table and
    verdicts without recomputing them.
    """
    src = Path(source)
    key, entry, finished = _recertify_source(src, runs, configuration)
    if isinstance(dense_max, bool) or not isinstance(dense_max, int) or dense_max < 0:
        raise UserInputError(f"dense_max: expected an int >= 0, got {dense_max!r}")
    path = Path(out)
    file = ResultsFile(
        path,
        fmt=KKR_RECERTIFIED_FORMAT,
        version=KKR_VERSION,
        noun="a recertification file",
    )
    result = file.load(
        file.new(source=str(src), configuration=key, runs=[]),  # resumed: the same configuration
        identity=("configuration",),
        fresh=fresh,
        check=_check_recertified_runs,
    )
    # A re-certified run is reused only while its source run is the same (by content, not by the
    # source file's path): one whose source run changed, or that does not record it, is redone.
    result["source"] = str(src)
    result["runs"] = [
        r
        for r in result["runs"]
        if (r["init"], r["seed"]) in finished
        and r.get("source_sha256") == _run_sha256(finished[(r["init"], r["seed"])])
    ]
    done = {(r["init"], r["seed"]) for r in result["runs"]}
    problem = build_kkr_problem(entry["problem"])
    _check_evidence_fields(entry, f"source: configuration {key!r}")
    for w in runs:
        _check_factors_shape(finished[tuple(w)], problem, f"source: {key!r}: run {shown(tuple(w))}")  # type: ignore[index]
    for i, r in enumerate(result["runs"]):
        _check_factors_shape(r, problem, f"out: {str(path)!r}: runs[{i}]")
    if not same_problem(entry.get("fingerprint") or {}, problem_fingerprint(problem)):
        raise UserInputError(f"source: the {key!r} problem of {str(src)!r} differs from the one built now")
    ref_value = float(entry["reference"]["value"])
    depth = max(problem.value(problem.zeros()) - ref_value, 0.0)
    train = KKR_PROBLEMS[entry["problem"]]["train"]
    save = _save_to(file, result)
    added = 0
    for init, seed in runs:
        if (init, seed) in done:
            continue
        added += 1
        run = _recertified_run(
            problem,
            init,
            seed,
            finished[(init, seed)],
            ref_value,
            depth,
            dense_max=dense_max,
            polish=polish,
            grad_tol=grad_tol,
            rank_rtol=rank_rtol,
        )
        result["runs"].append({**run, "source_sha256": _run_sha256(finished[(init, seed)])})
        save()
    recertified = [[r["init"], r["seed"]] for r in result["runs"]]
    # What the table and verdicts are computed from besides the re-certified runs: the source
    # configuration (every saved run, the reference, the constants) and this code's layout.
    basis = hashlib.sha256(
        json.dumps([_RECERTIFIED_TABLE_VERSION, entry], sort_keys=True, default=str).encode()
    ).hexdigest()
    if (
        not added
        and "table" in result
        and "verdicts" in result
        and result.get("recertified") == recertified
        and result.get("basis") == basis
    ):
        return result  # nothing new: the stored table and verdicts are those of these inputs
    # The configuration's table and verdicts with every re-certified end point in place of the
    # saved one (the reference, constants and bounds are the saved file's).
    merged = dict(entry, runs=recertified_runs(entry, result, problem))
    result["table"] = kkr_table(merged["runs"], entry["reference"], depth=depth)
    result["verdicts"] = _verdicts(merged, problem, train, path.parent / "counterexamples")
    result["recertified"] = recertified
    result["basis"] = basis
    save()
    return result
